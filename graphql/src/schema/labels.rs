//! Russian labels of every status, kind and type the API shows, and of the specialty
//! codes: the one place they are written. The API exposes each next to its value
//! (`status` and `statusLabelRu`); printed documents use the same words.

use kabinet_domain::documents::{
    DocumentKind, DocumentRequestStatus as DomainDocumentStatus, RejectionReason,
};
use kabinet_domain::policies::PolicyStatus as DomainPolicyStatus;
use kabinet_domain::prescriptions::PrescriptionStatus as DomainPrescriptionStatus;

use super::account_journal::AccountJournalKind;
use super::accounts::{AccountLoginKind, AccountStatus, DeliveryChannel, StaffRole, UserRole};
use super::appointments::{AppointmentStatus, ReferralStatus, Sex};
use super::doctors::{ServiceDelivery, ServiceType, SlotStatus};
use super::documents::{DocumentRequestStatus, DocumentType};
use super::identity::{PassportScanReview, VerificationStatus, VerificationStepKind};
use super::ids::ObjectType;
use super::notifications::{DeliveryStatus, NotificationDeliveryChannel, NotificationKind};
use super::policies::{PolicyKind, PolicyStatus};
use super::prescriptions::{PrescriptionRequestKind, PrescriptionStatus, VerificationResult};

/// A value with a Russian label for display.
pub trait LabelRu {
    /// The Russian label.
    fn label_ru(self) -> &'static str;
}

/// Russian names of the specialty codes in use (doctors, appointments, referrals).
const SPECIALTIES: &[(&str, &str)] = &[
    ("cardiologist", "Кардиолог"),
    ("dentist", "Стоматолог"),
    ("dermatologist", "Дерматовенеролог"),
    ("endocrinologist", "Эндокринолог"),
    ("gastroenterologist", "Гастроэнтеролог"),
    ("gynaecologist", "Акушер-гинеколог"),
    ("neurologist", "Невролог"),
    ("ophthalmologist", "Офтальмолог"),
    ("otolaryngologist", "Оториноларинголог"),
    ("paediatrician", "Педиатр"),
    ("psychiatrist", "Психиатр"),
    ("surgeon", "Хирург"),
    ("therapist", "Терапевт"),
    ("traumatologist", "Травматолог-ортопед"),
    ("urologist", "Уролог"),
];

/// The Russian name of a specialty code; the code itself when the table has none
/// (organisations may register doctors of specialties not listed yet).
pub fn specialty_label_ru(code: &str) -> &str {
    SPECIALTIES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(code, |(_, label)| label)
}

impl LabelRu for AppointmentStatus {
    fn label_ru(self) -> &'static str {
        match self {
            AppointmentStatus::Booked => "Записан",
            AppointmentStatus::Arrived => "Пациент пришёл",
            AppointmentStatus::Fulfilled => "Приём состоялся",
            AppointmentStatus::NoShow => "Неявка",
            AppointmentStatus::Cancelled => "Отменена",
        }
    }
}

impl LabelRu for ReferralStatus {
    fn label_ru(self) -> &'static str {
        match self {
            ReferralStatus::Processing => "В обработке",
            ReferralStatus::Approved => "Одобрено",
            ReferralStatus::Rejected => "Отклонено",
        }
    }
}

impl LabelRu for SlotStatus {
    fn label_ru(self) -> &'static str {
        match self {
            SlotStatus::Free => "Свободно",
            SlotStatus::Booked => "Занято",
            SlotStatus::Closed => "Приём не ведётся",
        }
    }
}

impl LabelRu for ServiceType {
    fn label_ru(self) -> &'static str {
        match self {
            ServiceType::Consultation => "Консультация",
            ServiceType::Diagnostics => "Диагностика",
            ServiceType::Treatment => "Лечение",
            ServiceType::Prevention => "Профилактика",
        }
    }
}

impl LabelRu for ServiceDelivery {
    fn label_ru(self) -> &'static str {
        match self {
            ServiceDelivery::InPerson => "Очно",
            ServiceDelivery::Remote => "Дистанционно",
        }
    }
}

impl LabelRu for DomainPrescriptionStatus {
    fn label_ru(self) -> &'static str {
        match self {
            DomainPrescriptionStatus::ReadyToPrint => "Готов к печати",
            DomainPrescriptionStatus::SentToPharmacy => "Отправлен в аптеку",
            DomainPrescriptionStatus::ReadyAtPharmacy => "Готов к выдаче в аптеке",
            DomainPrescriptionStatus::Dispensed => "Выдан",
            DomainPrescriptionStatus::Cancelled => "Отменён",
            DomainPrescriptionStatus::Expired => "Срок действия истёк",
        }
    }
}

impl LabelRu for PrescriptionStatus {
    fn label_ru(self) -> &'static str {
        self.domain().label_ru()
    }
}

impl LabelRu for PrescriptionRequestKind {
    fn label_ru(self) -> &'static str {
        match self {
            PrescriptionRequestKind::Resend => "Повторная отправка в аптеку",
            PrescriptionRequestKind::Cancellation => "Отмена рецепта",
        }
    }
}

impl LabelRu for VerificationResult {
    fn label_ru(self) -> &'static str {
        match self {
            VerificationResult::Valid => "Рецепт действителен",
            VerificationResult::Cancelled => "Рецепт отменён врачом",
            VerificationResult::Dispensed => "Лекарство по этому рецепту уже выдано",
            VerificationResult::Expired => "Срок действия рецепта истёк",
            VerificationResult::Invalid => {
                "Рецепт не найден: QR-код изменён, повреждён или выдан не этой системой"
            }
        }
    }
}

impl LabelRu for DomainPolicyStatus {
    fn label_ru(self) -> &'static str {
        match self {
            DomainPolicyStatus::Applied => "Заявление на рассмотрении",
            DomainPolicyStatus::Active => "Действует",
            DomainPolicyStatus::Rejected => "Отказано",
            DomainPolicyStatus::Expired => "Срок действия истёк",
        }
    }
}

impl LabelRu for PolicyStatus {
    fn label_ru(self) -> &'static str {
        match self {
            // The policy shows the first day next to it.
            PolicyStatus::Issued => "Оформлен",
            other => other.domain().label_ru(),
        }
    }
}

impl LabelRu for PolicyKind {
    fn label_ru(self) -> &'static str {
        match self {
            PolicyKind::Regional => "Региональный",
            PolicyKind::Federal => "Федеральный",
        }
    }
}

impl LabelRu for DocumentKind {
    fn label_ru(self) -> &'static str {
        match self {
            DocumentKind::HistoryExtract => "Выписка из истории болезни",
            DocumentKind::HealthCertificate => "Справка о состоянии здоровья",
            DocumentKind::ExaminationResults => "Результаты обследований",
        }
    }
}

impl LabelRu for DocumentType {
    fn label_ru(self) -> &'static str {
        self.kind().label_ru()
    }
}

impl LabelRu for DomainDocumentStatus {
    fn label_ru(self) -> &'static str {
        match self {
            DomainDocumentStatus::Submitted => "Подан",
            DomainDocumentStatus::InProgress => "В работе",
            DomainDocumentStatus::Fulfilled => "Исполнен",
            DomainDocumentStatus::Rejected => "Отклонён",
        }
    }
}

impl LabelRu for DocumentRequestStatus {
    fn label_ru(self) -> &'static str {
        self.domain().label_ru()
    }
}

impl LabelRu for RejectionReason {
    fn label_ru(self) -> &'static str {
        match self {
            RejectionReason::InvalidSupportingData => "Неверные или неполные сведения",
            RejectionReason::NoRecordsInPeriod => "Нет записей за период",
            RejectionReason::NotIssuedHere => "Документ не выдаётся этой организацией",
            RejectionReason::VisitRequired => "Требуется личный визит",
            RejectionReason::Other => "Другая причина",
        }
    }
}

impl LabelRu for VerificationStatus {
    fn label_ru(self) -> &'static str {
        match self {
            VerificationStatus::NotStarted => "Идентификация не пройдена",
            VerificationStatus::InProgress => "Идентификация в процессе",
            VerificationStatus::Verified => "Идентификация пройдена",
        }
    }
}

impl LabelRu for VerificationStepKind {
    fn label_ru(self) -> &'static str {
        match self {
            VerificationStepKind::Snils => "СНИЛС сверен с реестром",
            VerificationStepKind::PassportScan => "Скан паспорта проверен сотрудником",
            VerificationStepKind::Phone => "Телефон подтверждён кодом из SMS",
        }
    }
}

impl LabelRu for PassportScanReview {
    fn label_ru(self) -> &'static str {
        match self {
            PassportScanReview::None => "Скан паспорта не загружен",
            PassportScanReview::AwaitingReview => "Скан паспорта ждёт проверки",
            PassportScanReview::Approved => "Скан паспорта одобрен",
            PassportScanReview::Rejected => "Скан паспорта отклонён",
        }
    }
}

impl LabelRu for AccountStatus {
    fn label_ru(self) -> &'static str {
        match self {
            AccountStatus::Active => "Действует",
            AccountStatus::Deactivated => "Отключена администратором",
            AccountStatus::Closed => "Закрыта владельцем",
        }
    }
}

impl LabelRu for AccountLoginKind {
    fn label_ru(self) -> &'static str {
        match self {
            AccountLoginKind::Phone => "Телефон",
            AccountLoginKind::Email => "Электронная почта",
        }
    }
}

impl LabelRu for AccountJournalKind {
    fn label_ru(self) -> &'static str {
        match self {
            AccountJournalKind::SignIn => "Вход",
            AccountJournalKind::Change => "Изменение",
            AccountJournalKind::MedicalRead => "Просмотр медицинских данных",
        }
    }
}

impl LabelRu for UserRole {
    fn label_ru(self) -> &'static str {
        match self {
            UserRole::Patient => "Пациент",
            UserRole::Registrar => "Регистратор",
            UserRole::Doctor => "Врач",
            UserRole::Lab => "Сотрудник лаборатории",
            UserRole::Pharmacist => "Фармацевт",
            UserRole::Auditor => "Аудитор",
            UserRole::Analyst => "Аналитик",
            UserRole::Admin => "Администратор",
            UserRole::System => "Система",
        }
    }
}

impl LabelRu for StaffRole {
    fn label_ru(self) -> &'static str {
        UserRole::from(kabinet_domain::Role::from(self)).label_ru()
    }
}

impl LabelRu for Sex {
    fn label_ru(self) -> &'static str {
        match self {
            Sex::Female => "Женский",
            Sex::Male => "Мужской",
        }
    }
}

impl LabelRu for DeliveryChannel {
    fn label_ru(self) -> &'static str {
        match self {
            DeliveryChannel::Email => "Электронная почта",
            DeliveryChannel::Sms => "SMS",
        }
    }
}

impl LabelRu for NotificationDeliveryChannel {
    fn label_ru(self) -> &'static str {
        match self {
            NotificationDeliveryChannel::Email => "Электронная почта",
            NotificationDeliveryChannel::Sms => "SMS",
            NotificationDeliveryChannel::None => "Способ связи не выбран",
        }
    }
}

impl LabelRu for DeliveryStatus {
    fn label_ru(self) -> &'static str {
        match self {
            DeliveryStatus::Sending => "Отправляется",
            DeliveryStatus::Sent => "Отправлено",
            DeliveryStatus::Failed => "Не отправлено, будет повтор",
            DeliveryStatus::GaveUp => "Не удалось отправить",
            DeliveryStatus::Skipped => "Не отправлялось",
        }
    }
}

impl LabelRu for NotificationKind {
    fn label_ru(self) -> &'static str {
        match self {
            NotificationKind::AppointmentBooked => "Запись на приём",
            NotificationKind::AppointmentRescheduled => "Перенос записи",
            NotificationKind::AppointmentCancelled => "Отмена записи",
            NotificationKind::VisitFulfilled => "Приём состоялся",
            NotificationKind::ReferralApproved => "Направление одобрено",
            NotificationKind::ReferralRejected => "Направление отклонено",
            NotificationKind::DocumentReady => "Документ готов",
            NotificationKind::DocumentRejected => "Запрос документа отклонён",
            NotificationKind::PrescriptionIssued => "Выписан рецепт",
            NotificationKind::PrescriptionReady => "Рецепт готов в аптеке",
            NotificationKind::PrescriptionCancelled => "Рецепт отменён",
            NotificationKind::PrescriptionExpired => "Срок действия рецепта истёк",
            NotificationKind::PrescriptionRequestApproved => "Запрос по рецепту одобрен",
            NotificationKind::PrescriptionRequestDeclined => "Запрос по рецепту отклонён",
            NotificationKind::PolicyIssued => "Полис оформлен",
            NotificationKind::PolicyRejected => "В полисе отказано",
            NotificationKind::PolicyRenewalDue => "Пора продлить полис",
            NotificationKind::PolicyExpired => "Срок действия полиса истёк",
        }
    }
}

impl LabelRu for ObjectType {
    fn label_ru(self) -> &'static str {
        match self {
            ObjectType::Organisation => "Организация",
            ObjectType::Doctor => "Врач",
            ObjectType::Schedule => "Расписание врача",
            ObjectType::MedicalService => "Медицинская услуга",
            ObjectType::Appointment => "Запись на приём",
            ObjectType::ReferralRequest => "Запрос направления",
            ObjectType::Prescription => "Рецепт",
            ObjectType::Policy => "Полис ОМС",
            ObjectType::DocumentRequest => "Запрос медицинского документа",
            ObjectType::Account => "Учётная запись",
            ObjectType::Patient => "Данные пациента",
            ObjectType::IdentityVerification => "Подтверждение личности",
            ObjectType::NotificationSettings => "Настройки уведомлений",
            ObjectType::Other => "Другое",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_specialties_have_russian_names_and_others_show_their_code() {
        assert_eq!(specialty_label_ru("therapist"), "Терапевт");
        assert_eq!(specialty_label_ru("cardiologist"), "Кардиолог");
        assert_eq!(specialty_label_ru("podologist"), "podologist");
        assert!(SPECIALTIES.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
    }

    #[test]
    fn statuses_shared_with_printed_documents_keep_their_words() {
        assert_eq!(
            DomainPrescriptionStatus::ReadyToPrint.label_ru(),
            "Готов к печати"
        );
        assert_eq!(
            PrescriptionStatus::SentToPharmacy.label_ru(),
            "Отправлен в аптеку"
        );
        assert_eq!(PolicyStatus::Active.label_ru(), "Действует");
        assert_eq!(
            DocumentType::HealthCertificate.label_ru(),
            "Справка о состоянии здоровья"
        );
    }
}
