//! What a requested document says, built from the request, the patient's profile and
//! the visits of the period; nothing depends on the time of rendering, so the same
//! request renders to the same bytes.

use chrono::NaiveDate;
use kabinet_domain::appointments::VisitOutcome;
use kabinet_domain::documents::DocumentKind;
use kabinet_domain::patients::{PatientProfile, Sex};
use kabinet_projections::document_requests::DocumentRequestView;

use crate::schema::labels::LabelRu;
use kabinet_pdf::{PdfBlock, PdfDocument};

/// A visit as the document lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    /// Local date and time of the visit, `DD.MM.YYYY HH:MM`.
    pub when: String,
    pub specialty: Option<String>,
    pub doctor: Option<String>,
    pub outcome: VisitOutcome,
}

/// Everything a document is made of.
#[derive(Debug, Clone)]
pub struct DocumentFacts<'a> {
    pub request: &'a DocumentRequestView,
    pub kind: DocumentKind,
    pub profile: &'a PatientProfile,
    pub organisation_name: &'a str,
    pub organisation_address: &'a str,
    /// Local date of the submission in the organisation's zone.
    pub submitted_on: NaiveDate,
    /// Fulfilled visits of the period at the organisation, oldest first.
    pub visits: &'a [Visit],
}

/// `DD.MM.YYYY`, as Russian documents write dates.
pub fn ru_date(day: NaiveDate) -> String {
    day.format("%d.%m.%Y").to_string()
}

/// Surname, first name and patronymic.
pub fn full_name(profile: &PatientProfile) -> String {
    let mut name = format!("{} {}", profile.surname, profile.first_name);
    if let Some(p) = &profile.patronymic {
        name.push(' ');
        name.push_str(p);
    }
    name
}

fn specialty_ru(code: &str) -> &str {
    match code {
        "therapist" => "терапевт",
        "cardiologist" => "кардиолог",
        "dentist" => "стоматолог",
        "paediatrician" | "pediatrician" => "педиатр",
        "neurologist" => "невролог",
        "surgeon" => "хирург",
        "ophthalmologist" => "офтальмолог",
        "otolaryngologist" => "оториноларинголог",
        "gynaecologist" | "gynecologist" => "гинеколог",
        "endocrinologist" => "эндокринолог",
        other => other,
    }
}

fn field(label: &str, value: impl Into<String>) -> PdfBlock {
    PdfBlock::Field {
        label: label.to_string(),
        value: value.into(),
    }
}

fn visit_blocks(visits: &[Visit], with_recommendations: bool) -> Vec<PdfBlock> {
    if visits.is_empty() {
        return vec![PdfBlock::Paragraph(
            "За указанный период завершённых посещений нет.".to_string(),
        )];
    }
    visits
        .iter()
        .map(|v| {
            let mut line = v.when.clone();
            if let Some(s) = &v.specialty {
                line.push_str(", ");
                line.push_str(specialty_ru(s));
            }
            if let Some(d) = &v.doctor {
                line.push_str(", врач ");
                line.push_str(d);
            }
            line.push_str(&format!(
                ". Диагноз: {} {}.",
                v.outcome.diagnosis_code.as_str(),
                v.outcome.diagnosis_text
            ));
            if with_recommendations && !v.outcome.recommendations.trim().is_empty() {
                line.push_str(" Рекомендации: ");
                line.push_str(v.outcome.recommendations.trim());
            }
            if with_recommendations && !v.outcome.referrals.is_empty() {
                line.push_str(" Направления: ");
                line.push_str(&v.outcome.referrals.join(", "));
                line.push('.');
            }
            PdfBlock::Bullet(line)
        })
        .collect()
}

/// The document for `facts`.
pub fn document(facts: &DocumentFacts<'_>) -> PdfDocument {
    let r = facts.request;
    let period = format!("{} — {}", ru_date(r.period_from), ru_date(r.period_to));
    let mut blocks = vec![
        field("Медицинская организация", facts.organisation_name),
        field("Адрес", facts.organisation_address),
        field("Пациент", full_name(facts.profile)),
        field("Дата рождения", ru_date(facts.profile.birth_date)),
        field(
            "Пол",
            match facts.profile.sex {
                Sex::Female => "женский",
                Sex::Male => "мужской",
            },
        ),
    ];
    if let Some(policy) = &r.policy_number {
        blocks.push(field("Полис ОМС", policy.clone()));
    }
    blocks.push(field("Период", period.clone()));
    if let Some(visit) = r.visit_date {
        blocks.push(field("Дата посещения", ru_date(visit)));
    }
    blocks.push(field(
        "Запрос",
        format!("№ {} от {}", r.id, ru_date(facts.submitted_on)),
    ));
    if let Some(purpose) = &r.purpose {
        blocks.push(field("Цель", purpose.clone()));
    }
    blocks.push(PdfBlock::Rule);
    match facts.kind {
        DocumentKind::HistoryExtract => {
            blocks.push(PdfBlock::Heading(format!("Посещения за период {period}")));
            blocks.extend(visit_blocks(facts.visits, true));
        }
        DocumentKind::HealthCertificate => {
            blocks.push(PdfBlock::Heading("Содержание справки".to_string()));
            let mut asked = format!(
                "Справка выдана пациенту {} ({} г. р.) по его запросу от {}: запрошена справка о \
                 состоянии здоровья за период {period}",
                full_name(facts.profile),
                ru_date(facts.profile.birth_date),
                ru_date(facts.submitted_on),
            );
            if let Some(purpose) = &r.purpose {
                asked.push_str(&format!(" для предъявления: {purpose}"));
            }
            asked.push('.');
            blocks.push(PdfBlock::Paragraph(asked));
            blocks.push(PdfBlock::Paragraph(format!(
                "Число завершённых посещений за период: {}.",
                facts.visits.len()
            )));
            blocks.push(PdfBlock::Heading("Диагнозы за период".to_string()));
            blocks.extend(visit_blocks(facts.visits, false));
        }
        DocumentKind::ExaminationResults => {
            blocks.push(PdfBlock::Heading(format!(
                "Обследования и их результаты за период {period}"
            )));
            blocks.extend(visit_blocks(facts.visits, true));
        }
    }
    blocks.push(PdfBlock::Rule);
    blocks.push(PdfBlock::Paragraph(
        "Документ сформирован в личном кабинете пациента по данным медицинской организации. \
         Подлинность подтверждается контрольной суммой SHA-256, записанной в журнале запроса."
            .to_string(),
    ));
    PdfDocument {
        title: facts.kind.label_ru().to_string(),
        blocks,
        qr: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use kabinet_domain::appointments::IcdCode;
    use uuid::Uuid;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("instant")
    }

    #[test]
    fn the_same_request_renders_to_the_same_bytes() {
        let request = DocumentRequestView {
            id: Uuid::from_u128(1),
            patient_id: Uuid::from_u128(2),
            organisation_id: Uuid::from_u128(3),
            kind: "history_extract".into(),
            status: "in_progress".into(),
            period_from: NaiveDate::from_ymd_opt(2026, 1, 1).expect("date"),
            period_to: NaiveDate::from_ymd_opt(2026, 3, 31).expect("date"),
            policy_number: Some("7723456789012346".into()),
            visit_date: None,
            purpose: Some("для работы".into()),
            resubmission_of: None,
            resubmitted_as: None,
            due_at: at(1_780_000_000),
            file_sha256: None,
            reject_code: None,
            reject_text: None,
            submitted_at: at(1_779_000_000),
            updated_at: at(1_779_000_100),
        };
        let profile = PatientProfile {
            surname: "Смирнова".into(),
            first_name: "Анна".into(),
            patronymic: Some("Сергеевна".into()),
            birth_date: NaiveDate::from_ymd_opt(1990, 5, 4).expect("date"),
            sex: Sex::Female,
        };
        let visits = vec![Visit {
            when: "10.02.2026 09:20".into(),
            specialty: Some("therapist".into()),
            doctor: Some("Петров Пётр".into()),
            outcome: VisitOutcome {
                diagnosis_code: IcdCode::parse("J06.9").expect("icd"),
                diagnosis_text: "ОРВИ".into(),
                recommendations: "покой".into(),
                prescriptions: vec![],
                referrals: vec![],
            },
        }];
        let facts = DocumentFacts {
            request: &request,
            kind: DocumentKind::HistoryExtract,
            profile: &profile,
            organisation_name: "Поликлиника №1",
            organisation_address: "Москва",
            submitted_on: NaiveDate::from_ymd_opt(2026, 4, 1).expect("date"),
            visits: &visits,
        };
        let first = kabinet_pdf::render(&document(&facts));
        let second = kabinet_pdf::render(&document(&facts));
        assert_eq!(first, second);
    }
}
