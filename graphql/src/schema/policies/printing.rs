//! The printable policy.

use super::status_of;
use crate::schema::labels::LabelRu;
use kabinet_pdf::{PdfBlock, PdfDocument};
use kabinet_projections::policies::PolicyView;

/// The printable policy, built from the read model.
pub(super) fn policy_pdf(view: &PolicyView, today: chrono::NaiveDate) -> PdfDocument {
    let field = |label: &str, value: String| PdfBlock::Field {
        label: label.to_string(),
        value,
    };
    let date = |d: chrono::NaiveDate| d.format("%d.%m.%Y").to_string();
    let mut blocks = vec![
        field("Номер полиса", view.number.clone().unwrap_or_default()),
        field(
            "Застрахованное лицо",
            [
                Some(view.surname.as_str()),
                Some(view.first_name.as_str()),
                view.patronymic.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
        ),
        field("Дата рождения", date(view.birth_date)),
        field(
            "Вид полиса",
            match view.kind.as_str() {
                "regional" => "региональный",
                _ => "федеральный",
            }
            .to_string(),
        ),
    ];
    if let Some(region) = &view.region {
        blocks.push(field("Регион", region.clone()));
    }
    blocks.push(field(
        "Срок действия",
        format!(
            "с {} по {} включительно",
            date(view.valid_from),
            date(view.valid_until)
        ),
    ));
    blocks.push(field(
        "Статус",
        if view.status == "active" && view.valid_from > today {
            format!("Оформлен, действует с {}", date(view.valid_from))
        } else {
            status_of(&view.status).label_ru().to_string()
        },
    ));
    PdfDocument {
        title: "Полис обязательного медицинского страхования".to_string(),
        blocks,
        qr: None,
    }
}
