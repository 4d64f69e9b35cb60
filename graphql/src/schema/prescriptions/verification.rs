//! What a scanned QR code shows: the answer and its public HTML page.

use super::{ru_date, status_of};
use crate::schema::context::Services;
use crate::schema::labels::LabelRu;
use async_graphql::{ComplexObject, Enum, SimpleObject};
use chrono::NaiveDate;
use kabinet_domain::prescriptions::PrescriptionStatus as DomainStatus;
use kabinet_projections::prescriptions;
use serde::Serialize;

/// What a pharmacist needs to know of a scanned prescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationResult {
    /// Genuine and may be dispensed.
    Valid,
    Cancelled,
    Dispensed,
    Expired,
    /// Not a token this service signed (changed, truncated or made up).
    Invalid,
}

/// The answer to a verification: the result and, for a genuine token, only
/// what a pharmacist needs.
#[derive(Debug, Clone, SimpleObject, Serialize)]
#[serde(rename_all = "camelCase")]
#[graphql(complex)]
pub struct PrescriptionVerification {
    pub result: VerificationResult,
    pub medication: Option<String>,
    pub dosage: Option<String>,
    pub quantity: Option<i64>,
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
    pub prescriber_name: Option<String>,
    pub organisation_name: Option<String>,
    pub patient_initials: Option<String>,
}

#[ComplexObject]
impl PrescriptionVerification {
    /// The verdict in Russian, as the public page shows it.
    async fn result_label_ru(&self) -> &'static str {
        self.result.label_ru()
    }
}

impl PrescriptionVerification {
    fn invalid() -> Self {
        PrescriptionVerification {
            result: VerificationResult::Invalid,
            medication: None,
            dosage: None,
            quantity: None,
            valid_from: None,
            valid_until: None,
            prescriber_name: None,
            organisation_name: None,
            patient_initials: None,
        }
    }
}

/// Verifies a prescription token: its signature, then the prescription's state now.
pub async fn verify(s: &Services, token: &str) -> Result<PrescriptionVerification, sqlx::Error> {
    let Ok((id, issued_micros)) = s.prescription_signer.verify(token) else {
        return Ok(PrescriptionVerification::invalid());
    };
    let Some(view) = prescriptions::get(&s.db, id).await? else {
        return Ok(PrescriptionVerification::invalid());
    };
    if view.issued_at.timestamp_micros() != issued_micros {
        return Ok(PrescriptionVerification::invalid());
    }
    let result = match status_of(&view.status) {
        DomainStatus::Cancelled => VerificationResult::Cancelled,
        DomainStatus::Dispensed => VerificationResult::Dispensed,
        DomainStatus::Expired => VerificationResult::Expired,
        // The scheduler may not have recorded an ended validity yet.
        _ if s.clock.now() >= view.expires_at => VerificationResult::Expired,
        _ => VerificationResult::Valid,
    };
    Ok(PrescriptionVerification {
        result,
        medication: Some(view.medication),
        dosage: Some(view.dosage),
        quantity: Some(view.quantity),
        valid_from: Some(view.valid_from.to_string()),
        valid_until: Some(view.valid_until.to_string()),
        prescriber_name: Some(view.doctor_name),
        organisation_name: Some(view.organisation_name),
        patient_initials: Some(view.patient_initials),
    })
}

/// Escapes text for HTML element content and attribute values.
pub(super) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `DD.MM.YYYY` of a `YYYY-MM-DD` date, or the text as it is.
pub(super) fn ru_day_of(raw: &str) -> String {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map(ru_date)
        .unwrap_or_else(|_| raw.to_string())
}

/// The page a phone's browser shows for the QR code of a printed prescription:
/// the verdict in Russian in large letters, then what a pharmacist checks.
pub fn verification_page(answer: &PrescriptionVerification) -> String {
    let verdict = answer.result.label_ru();
    let tone = match answer.result {
        VerificationResult::Valid => "ok",
        _ => "bad",
    };
    let mut rows = String::new();
    let mut row = |label: &str, value: Option<String>| {
        if let Some(value) = value {
            rows.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>\n",
                html_escape(label),
                html_escape(&value)
            ));
        }
    };
    row("Препарат", answer.medication.clone());
    row("Способ применения", answer.dosage.clone());
    row(
        "Количество упаковок",
        answer.quantity.map(|q| q.to_string()),
    );
    if let (Some(from), Some(until)) = (&answer.valid_from, &answer.valid_until) {
        row(
            "Действителен",
            Some(format!(
                "с {} по {} включительно",
                ru_day_of(from),
                ru_day_of(until)
            )),
        );
    }
    row("Врач", answer.prescriber_name.clone());
    row("Медицинская организация", answer.organisation_name.clone());
    row("Пациент (инициалы)", answer.patient_initials.clone());
    let table = if rows.is_empty() {
        String::new()
    } else {
        format!("<table>\n{rows}</table>\n")
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"ru\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Проверка рецепта — {verdict}</title>\n\
         <style>body{{font-family:sans-serif;margin:1.5em;max-width:40em}}\
         .ok{{color:#11632b}}.bad{{color:#a4161a}}th{{text-align:left;padding-right:1em;\
         vertical-align:top;font-weight:normal;color:#555}}td{{padding-bottom:.4em}}</style>\n\
         </head>\n<body>\n<h1 class=\"{tone}\">{verdict}</h1>\n{table}\
         <p>Проверка электронного рецепта по QR-коду. Сведения показаны на момент проверки.</p>\n\
         </body>\n</html>\n",
        verdict = html_escape(verdict),
    )
}
