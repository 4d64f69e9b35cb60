//! The printable prescription: its PDF, its QR link and its download link.

use super::status_of;
use crate::schema::context::{internal, services as svc, Services};
use crate::schema::labels::LabelRu;
use crate::schema::links::DownloadLink;
use async_graphql::Context;
use chrono::NaiveDate;
use chrono_tz::Tz;
use kabinet_pdf::{PdfBlock, PdfDocument};
use kabinet_projections::prescriptions::PrescriptionView;
use uuid::Uuid;

/// How long a download link of a rendered document stays valid.
pub const DOWNLOAD_LINK_MINUTES: i64 = 15;

pub(super) fn ru_date(day: NaiveDate) -> String {
    day.format("%d.%m.%Y").to_string()
}

/// The printable prescription: what a pharmacist needs, and the QR code of its
/// verification link. Built from the read model only, so the same prescription
/// in the same state always renders to the same bytes.
pub fn prescription_pdf(view: &PrescriptionView, verification: String, tz: Tz) -> PdfDocument {
    let field = |label: &str, value: String| PdfBlock::Field {
        label: label.to_string(),
        value,
    };
    let status = status_of(&view.status);
    PdfDocument {
        title: "Рецепт на лекарственный препарат".to_string(),
        blocks: vec![
            field("Номер рецепта", view.id.to_string()),
            field(
                "Дата выписки",
                view.issued_at
                    .with_timezone(&tz)
                    .format("%d.%m.%Y %H:%M")
                    .to_string(),
            ),
            field("Пациент (инициалы)", view.patient_initials.clone()),
            field("Врач", view.doctor_name.clone()),
            field("Медицинская организация", view.organisation_name.clone()),
            PdfBlock::Rule,
            field("Препарат", view.medication.clone()),
            field("Способ применения", view.dosage.clone()),
            field("Количество упаковок", view.quantity.to_string()),
            field(
                "Действителен",
                format!(
                    "с {} по {} включительно",
                    ru_date(view.valid_from),
                    ru_date(view.valid_until)
                ),
            ),
            field("Статус", status.label_ru().to_string()),
            PdfBlock::Rule,
            PdfBlock::Paragraph(
                "Подлинность и статус рецепта проверяются по QR-коду ниже.".to_string(),
            ),
        ],
        qr: Some(verification),
    }
}

/// Stores `doc` rendered and returns a short-lived download link for `account`.
pub async fn download_link(
    ctx: &Context<'_>,
    doc: &PdfDocument,
    account: Uuid,
) -> async_graphql::Result<DownloadLink> {
    let s = svc(ctx);
    let bytes = kabinet_pdf::render(doc);
    let sha256 = s
        .files
        .store(&bytes, kabinet_pdf::MEDIA_TYPE)
        .await
        .map_err(|e| internal(ctx, e))?;
    let expires = s.clock.now() + chrono::Duration::minutes(DOWNLOAD_LINK_MINUTES);
    Ok(DownloadLink::signed(s, &sha256, account, expires))
}

/// The verification link printed as the prescription's QR code.
pub fn verification_url(s: &Services, view: &PrescriptionView) -> String {
    let token = s.prescription_signer.sign(view.id, view.issued_at);
    format!("{}/verify/prescription/{token}", s.public_url)
}
