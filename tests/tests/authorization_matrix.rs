//! Authorisation everywhere (issue 4, item 7).
//!
//! The list of every Query, Mutation and Subscription field and every field of every
//! object type comes from the live schema (introspection). Each must have a rule in
//! the tables below, and every rule must name a field that exists: a new field without
//! a rule fails this test. Every root Query and Mutation field is then called by every
//! role (and anonymously) against a real server, and the outcome must match its rule:
//! `UNAUTHENTICATED`, `FORBIDDEN`, or let through (data or user errors).
//!
//! To add a field: one line in `ROOT_RULES` (who may call it, and a sample call with
//! arguments that pass validation), or its name in the right `OBJECT_RULES` line.
//!
//! IDOR tests at the end: other patients' ids, ids of other types and staff of other
//! organisations get `null` / `NOT_FOUND`, never a hint that the object exists.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, Utc};
use kabinet_domain::Role;
use kabinet_graphql::schema::ids;
use kabinet_tests::clinic::{
    doctor_input, organisation_details, register_doctor, register_organisation, with,
};
use kabinet_tests::conformance;
use kabinet_tests::server::{Client, Server};
use serde_json::{json, Value};
use uuid::Uuid;

/// Who may call a root field.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in account (it sees only its own data).
    SignedIn,
    /// Only these roles; other roles get FORBIDDEN, anonymous callers UNAUTHENTICATED.
    Roles(&'static [Role]),
}

use Role::{Admin, Analyst, Auditor, Doctor, Lab, Patient, Pharmacist, Registrar};

const PATIENT: Access = Access::Roles(&[Patient]);
const ADMIN: Access = Access::Roles(&[Admin]);

/// Every root field: its rule and a sample call. `$ORG`, `$DOCTOR`, `$PATIENT`,
/// `$APPOINTMENT`, `$REFERRAL` stand for ids of the fixture (staff tokens belong to
/// `$ORG`, the patient token is `$PATIENT`; the appointment and referral do not exist).
#[rustfmt::skip]
const ROOT_RULES: &[(&str, Access, &str)] = &[
    // --- Query --------------------------------------------------------------------------
    ("Query.node", Access::Public, r#"{ node(id: "$ORG") { id } }"#),
    ("Query.me", Access::SignedIn, "{ me { role } }"),
    ("Query.journalDigest", Access::Roles(&[Auditor, Admin]), "{ journalDigest { digest } }"),
    ("Query.organisations", Access::Public, "{ organisations(first: 1) { edges { cursor } } }"),
    ("Query.doctors", Access::Public, "{ doctors(first: 1) { edges { cursor } } }"),
    ("Query.medicalServices", Access::Public, "{ medicalServices(first: 1) { edges { cursor } } }"),
    ("Query.freeSlots", Access::Public, r#"{ freeSlots(doctorId: "$DOCTOR", from: "$TOMORROW", to: "$TOMORROW") { id } }"#),
    ("Query.myAppointments", PATIENT, "{ myAppointments { edges { cursor } } }"),
    ("Query.visitHistory", PATIENT, "{ visitHistory { edges { cursor } } }"),
    ("Query.organisationAppointments", Access::Roles(&[Registrar, Doctor, Admin]), r#"{ organisationAppointments(organisationId: "$ORG", date: "$TOMORROW") { edges { cursor } } }"#),
    ("Query.myReferralRequests", PATIENT, "{ myReferralRequests { edges { cursor } } }"),
    ("Query.activityLog", Access::SignedIn, "{ activityLog(first: 1) { edges { cursor } } }"),
    ("Query.myProfile", PATIENT, "{ myProfile { surname } }"),
    ("Query.patientProfile", Access::Roles(&[Registrar, Doctor]), r#"{ patientProfile(patientId: "$PATIENT") { surname } }"#),
    ("Query.myIdentityVerification", PATIENT, "{ myIdentityVerification { status } }"),
    ("Query.passportScansAwaitingReview", Access::Roles(&[Registrar, Admin]), "{ passportScansAwaitingReview(first: 1) { edges { cursor } } }"),
    ("Query.accountJournal", Access::SignedIn, "{ accountJournal(first: 1) { edges { cursor } } }"),
    ("Query.myPrescriptions", PATIENT, "{ myPrescriptions(first: 1) { edges { cursor } } }"),
    ("Query.pharmacyPrescriptions", Access::Roles(&[Pharmacist]), "{ pharmacyPrescriptions(first: 1) { edges { cursor } } }"),
    ("Query.organisationPrescriptions", Access::Roles(&[Doctor, Registrar]), "{ organisationPrescriptions(first: 1) { edges { cursor } } }"),
    ("Query.pharmacies", Access::Public, "{ pharmacies(first: 1) { edges { cursor } } }"),
    ("Query.verifyPrescription", Access::Public, r#"{ verifyPrescription(token: "not-a-token") { result } }"#),
    ("Query.myPolicy", PATIENT, "{ myPolicy { id } }"),
    ("Query.myPolicies", PATIENT, "{ myPolicies(first: 1) { edges { cursor } } }"),
    ("Query.policyApplications", ADMIN, "{ policyApplications(first: 1) { edges { cursor } } }"),
    ("Query.documentRequests", PATIENT, "{ documentRequests(first: 1) { edges { cursor } } }"),
    ("Query.organisationDocumentRequests", Access::Roles(&[Registrar, Doctor, Lab]), "{ organisationDocumentRequests(first: 1) { edges { cursor } } }"),
    ("Query.myAccount", Access::SignedIn, "{ myAccount { id } }"),
    ("Query.myNotifications", Access::SignedIn, "{ myNotifications(first: 1) { edges { cursor } } }"),
    ("Query.myNotificationPreferences", Access::SignedIn, "{ myNotificationPreferences { channels } }"),
    // --- Mutation -----------------------------------------------------------------------
    ("Mutation.registerOrganisation", ADMIN, r#"mutation { registerOrganisation(input: { details: $ORG_DETAILS }) { userErrors { code } } }"#),
    ("Mutation.updateOrganisation", Access::Roles(&[Admin, Registrar]), r#"mutation { updateOrganisation(input: { id: "$ORG", details: $ORG_DETAILS }) { userErrors { code } } }"#),
    ("Mutation.registerDoctor", Access::Roles(&[Admin, Registrar]), r#"mutation { registerDoctor(input: { doctor: { surname: "Орлова", firstName: "Ия", specialty: "therapist", qualification: "первая", organisationId: "$ORG", department: "Терапия", serviceCodes: [] } }) { userErrors { code } } }"#),
    ("Mutation.registerMedicalService", ADMIN, r#"mutation { registerMedicalService(input: { code: "A01.001", name: "Осмотр", serviceType: CONSULTATION, form: IN_PERSON, cost: "0", requiredDocuments: [] }) { userErrors { code } } }"#),
    ("Mutation.publishSchedule", Access::Roles(&[Admin, Registrar]), r#"mutation { publishSchedule(input: { doctorId: "$DOCTOR", date: "$TOMORROW", start: "18:00", end: "18:20", slotMinutes: 20, room: "1", serviceCodes: [] }) { userErrors { code } } }"#),
    ("Mutation.closeSchedulePeriod", Access::Roles(&[Admin, Registrar]), r#"mutation { closeSchedulePeriod(input: { doctorId: "$DOCTOR", periodId: "$APPOINTMENT", reason: "ремонт" }) { userErrors { code } } }"#),
    ("Mutation.recordPatientProfile", Access::Roles(&[Patient, Registrar]), r#"mutation { recordPatientProfile(input: { surname: "Белова", firstName: "Ада", birthDate: "1990-01-01", sex: FEMALE }) { userErrors { code } } }"#),
    ("Mutation.bookAppointment", Access::Roles(&[Patient, Registrar]), r#"mutation { bookAppointment(input: { slotId: "bm8tc2xvdA", patientId: "$PATIENT" }) { userErrors { code } } }"#),
    ("Mutation.rescheduleAppointment", Access::Roles(&[Patient, Registrar]), r#"mutation { rescheduleAppointment(input: { appointmentId: "$APPOINTMENT", slotId: "bm8tc2xvdA" }) { userErrors { code } } }"#),
    ("Mutation.cancelAppointment", Access::Roles(&[Patient, Registrar]), r#"mutation { cancelAppointment(input: { appointmentId: "$APPOINTMENT" }) { userErrors { code } } }"#),
    ("Mutation.markPatientArrived", Access::Roles(&[Registrar, Doctor]), r#"mutation { markPatientArrived(input: { appointmentId: "$APPOINTMENT" }) { userErrors { code } } }"#),
    ("Mutation.markNoShow", Access::Roles(&[Registrar, Doctor]), r#"mutation { markNoShow(input: { appointmentId: "$APPOINTMENT" }) { userErrors { code } } }"#),
    ("Mutation.fulfilVisit", Access::Roles(&[Doctor]), r#"mutation { fulfilVisit(input: { appointmentId: "$APPOINTMENT", diagnosisCode: "J06.9", diagnosisText: "ОРВИ" }) { userErrors { code } } }"#),
    ("Mutation.reviewVisit", PATIENT, r#"mutation { reviewVisit(input: { appointmentId: "$APPOINTMENT", rating: 5 }) { userErrors { code } } }"#),
    ("Mutation.requestReferral", PATIENT, r#"mutation { requestReferral(input: { organisationId: "$ORG", specialty: "cardiologist", reason: "боли" }) { userErrors { code } } }"#),
    ("Mutation.decideReferral", Access::Roles(&[Doctor, Registrar]), r#"mutation { decideReferral(input: { referralId: "$REFERRAL", approve: true }) { userErrors { code } } }"#),
    ("Mutation.updateMyProfile", PATIENT, r#"mutation { updateMyProfile(input: { email: "a@example.ru" }) { userErrors { code } } }"#),
    ("Mutation.verifySnils", PATIENT, "mutation { verifySnils { userErrors { code } } }"),
    ("Mutation.sendIdentityCode", PATIENT, "mutation { sendIdentityCode { userErrors { code } } }"),
    ("Mutation.confirmIdentityCode", PATIENT, r#"mutation { confirmIdentityCode(input: { code: "123456" }) { userErrors { code } } }"#),
    ("Mutation.reviewPassportScan", Access::Roles(&[Registrar, Admin]), r#"mutation { reviewPassportScan(input: { patientId: "$PATIENT", sha256: "00", decision: APPROVE }) { userErrors { code } } }"#),
    ("Mutation.startRegistration", Access::Public, r#"mutation { startRegistration(input: { contact: "matrix@example.ru" }) { userErrors { code } } }"#),
    ("Mutation.confirmRegistration", Access::Public, r#"mutation { confirmRegistration(input: { contact: "matrix@example.ru", code: "000000", password: "Длинный-пароль-42", acceptTerms: true }) { userErrors { code } } }"#),
    ("Mutation.signIn", Access::Public, r#"mutation { signIn(input: { login: "matrix@example.ru", password: "Длинный-пароль-42" }) { userErrors { code } } }"#),
    ("Mutation.completeSignIn", Access::Public, r#"mutation { completeSignIn(input: { challengeId: "no-such-challenge", code: "000000" }) { userErrors { code } } }"#),
    ("Mutation.refreshSession", Access::Public, r#"mutation { refreshSession(input: { refreshToken: "no-such-token" }) { userErrors { code } } }"#),
    ("Mutation.requestPasswordRecovery", Access::Public, r#"mutation { requestPasswordRecovery(input: { contact: "matrix@example.ru" }) { userErrors { code } } }"#),
    ("Mutation.resetPassword", Access::Public, r#"mutation { resetPassword(input: { contact: "matrix@example.ru", code: "000000", newPassword: "Длинный-пароль-42" }) { userErrors { code } } }"#),
    ("Mutation.signOut", Access::SignedIn, "mutation { signOut { userErrors { code } } }"),
    ("Mutation.signOutEverywhere", Access::SignedIn, "mutation { signOutEverywhere { userErrors { code } } }"),
    ("Mutation.startTotpEnrolment", Access::SignedIn, "mutation { startTotpEnrolment { userErrors { code } } }"),
    ("Mutation.confirmTotpEnrolment", Access::SignedIn, r#"mutation { confirmTotpEnrolment(input: { code: "000000" }) { userErrors { code } } }"#),
    ("Mutation.disableTotp", Access::SignedIn, r#"mutation { disableTotp(input: { code: "000000" }) { userErrors { code } } }"#),
    ("Mutation.closeMyAccount", Access::SignedIn, r#"mutation { closeMyAccount(input: { password: "Длинный-пароль-42" }) { userErrors { code } } }"#),
    ("Mutation.createStaffAccount", ADMIN, r#"mutation { createStaffAccount(input: { role: AUDITOR, login: "auditor@example.ru" }) { userErrors { code } } }"#),
    ("Mutation.deactivateAccount", ADMIN, r#"mutation { deactivateAccount(input: { accountId: "$PATIENT" }) { userErrors { code } } }"#),
    ("Mutation.setNotificationPreferences", Access::SignedIn, r#"mutation { setNotificationPreferences(input: { channels: [EMAIL], email: "matrix@example.ru" }) { userErrors { code } } }"#),
    ("Mutation.issuePrescription", Access::Roles(&[Doctor]), r#"mutation { issuePrescription(input: { patientId: "$PATIENT", medication: "Амоксициллин", dosage: "по 1 таблетке 2 раза в день", quantity: 1, validFrom: "$TOMORROW", validUntil: "$TOMORROW" }) { userErrors { code } } }"#),
    ("Mutation.sendPrescriptionToPharmacy", PATIENT, r#"mutation { sendPrescriptionToPharmacy(input: { prescriptionId: "$PRESCRIPTION", pharmacyId: "$ORG" }) { userErrors { code } } }"#),
    ("Mutation.requestPrescriptionResend", PATIENT, r#"mutation { requestPrescriptionResend(input: { prescriptionId: "$PRESCRIPTION", pharmacyId: "$ORG" }) { userErrors { code } } }"#),
    ("Mutation.requestPrescriptionCancellation", PATIENT, r#"mutation { requestPrescriptionCancellation(input: { prescriptionId: "$PRESCRIPTION", reason: "не нужен" }) { userErrors { code } } }"#),
    ("Mutation.decidePrescriptionRequest", Access::Roles(&[Doctor]), r#"mutation { decidePrescriptionRequest(input: { prescriptionId: "$PRESCRIPTION", approve: true }) { userErrors { code } } }"#),
    ("Mutation.cancelPrescription", Access::Roles(&[Doctor]), r#"mutation { cancelPrescription(input: { prescriptionId: "$PRESCRIPTION", reason: "ошибка" }) { userErrors { code } } }"#),
    ("Mutation.markPrescriptionReady", Access::Roles(&[Pharmacist]), r#"mutation { markPrescriptionReady(input: { prescriptionId: "$PRESCRIPTION" }) { userErrors { code } } }"#),
    ("Mutation.dispensePrescription", Access::Roles(&[Pharmacist]), r#"mutation { dispensePrescription(input: { prescriptionId: "$PRESCRIPTION" }) { userErrors { code } } }"#),
    ("Mutation.designatePharmacy", ADMIN, r#"mutation { designatePharmacy(input: { organisationId: "$ORG" }) { userErrors { code } } }"#),
    ("Mutation.applyForPolicy", PATIENT, r#"mutation { applyForPolicy(input: { consent: true }) { userErrors { code } } }"#),
    ("Mutation.issuePolicy", ADMIN, r#"mutation { issuePolicy(input: { policyId: "$POLICY" }) { userErrors { code } } }"#),
    ("Mutation.rejectPolicyApplication", ADMIN, r#"mutation { rejectPolicyApplication(input: { policyId: "$POLICY", reason: "нет данных" }) { userErrors { code } } }"#),
    ("Mutation.requestDocument", PATIENT, r#"mutation { requestDocument(input: { organisationId: "$ORG", type: HEALTH_CERTIFICATE, periodFrom: "2026-01-01", periodTo: "2026-02-01" }) { userErrors { code } } }"#),
    ("Mutation.resubmitDocumentRequest", PATIENT, r#"mutation { resubmitDocumentRequest(input: { requestId: "$DOCUMENT_REQUEST" }) { userErrors { code } } }"#),
    ("Mutation.sendDocumentToClinic", PATIENT, r#"mutation { sendDocumentToClinic(input: { requestId: "$DOCUMENT_REQUEST", organisationId: "$ORG" }) { userErrors { code } } }"#),
    ("Mutation.startDocumentRequest", Access::Roles(&[Registrar, Doctor, Lab]), r#"mutation { startDocumentRequest(input: { requestId: "$DOCUMENT_REQUEST" }) { userErrors { code } } }"#),
    ("Mutation.fulfilDocumentRequest", Access::Roles(&[Registrar, Doctor, Lab]), r#"mutation { fulfilDocumentRequest(input: { requestId: "$DOCUMENT_REQUEST" }) { userErrors { code } } }"#),
    ("Mutation.rejectDocumentRequest", Access::Roles(&[Registrar, Doctor, Lab]), r#"mutation { rejectDocumentRequest(input: { requestId: "$DOCUMENT_REQUEST", reasonCode: OTHER, text: "нет" }) { userErrors { code } } }"#),
    ("Mutation.loadSnilsRegistry", ADMIN, "mutation { loadSnilsRegistry(input: { entries: [] }) { loaded } }"),
    // --- Subscription (over WebSocket; rule checked for presence only) ------------------
    ("Subscription.activityFeed", Access::SignedIn, ""),
    ("Subscription.myPolicyUpdates", PATIENT, ""),
];

/// How an object field is protected.
#[derive(Debug, Clone, Copy)]
enum FieldRule {
    /// Whoever may see the parent object sees the field.
    Inherit,
    /// Medical data: patients need a verified identity, and every read is recorded.
    Medical,
    /// Personal data of a patient: the patient, and staff of an organisation the
    /// patient is in the care of (recorded; registrars see only name, birth date,
    /// sex and phone).
    Personal,
}

/// The fields of every object type, by rule.
#[rustfmt::skip]
const OBJECT_RULES: &[(&str, FieldRule, &[&str])] = &[
    ("Account", FieldRule::Inherit, &["id", "login", "loginKind", "loginKindLabelRu", "organisationId", "role", "roleLabelRu", "status", "statusLabelRu", "termsVersion", "totpEnabled"]),
    ("AccountJournalEntry", FieldRule::Inherit, &["occurredAt", "kind", "kindLabelRu", "action", "labelEn", "labelRu", "byOwner", "actorRole", "actorRoleLabelRu", "organisation", "objectId"]),
    ("AccountJournalEntryConnection", FieldRule::Inherit, &["pageInfo", "edges", "nodes"]),
    ("AccountJournalEntryEdge", FieldRule::Inherit, &["node", "cursor"]),
    ("ActivityEntry", FieldRule::Inherit, &["occurredAt", "action", "objectType", "objectTypeLabelRu", "objectId", "status", "actorId", "actorRole", "actorRoleLabelRu", "position"]),
    ("ActivityEntryConnection", FieldRule::Inherit, &["pageInfo", "edges", "nodes"]),
    ("ActivityEntryEdge", FieldRule::Inherit, &["node", "cursor"]),
    ("Appointment", FieldRule::Inherit, &["id", "status", "statusLabelRu", "start", "end", "date", "time", "timeZone", "room", "serviceCode", "specialty", "specialtyLabelRu", "cancelReason", "cancelledBy", "reviewRating", "patientId", "doctor", "organisation"]),
    ("Appointment", FieldRule::Medical, &["outcome"]),
    ("AppointmentConnection", FieldRule::Inherit, &["pageInfo", "edges", "nodes"]),
    ("AppointmentEdge", FieldRule::Inherit, &["node", "cursor"]),
    ("AppointmentPayload", FieldRule::Inherit, &["appointment", "userErrors"]),
    ("AuthTokens", FieldRule::Inherit, &["accessToken", "accessTokenExpiresAt", "refreshToken", "sessionExpiresAt"]),
    ("CloseMyAccountPayload", FieldRule::Inherit, &["closed", "userErrors"]),
    ("CloseSchedulePeriodPayload", FieldRule::Inherit, &["cancelledAppointments", "userErrors"]),
    ("CodeDelivery", FieldRule::Inherit, &["channel", "channelLabelRu", "expiresAt", "sentTo"]),
    ("CreateStaffAccountPayload", FieldRule::Inherit, &["account", "userErrors"]),
    ("DeactivateAccountPayload", FieldRule::Inherit, &["account", "userErrors"]),
    ("DesignatePharmacyPayload", FieldRule::Inherit, &["organisation", "userErrors"]),
    ("Doctor", FieldRule::Inherit, &["id", "surname", "firstName", "patronymic", "fullName", "specialty", "specialtyLabelRu", "qualification", "department", "serviceCodes", "rating", "reviewCount", "organisation", "nextFreeSlot"]),
    ("DoctorConnection", FieldRule::Inherit, &["pageInfo", "edges", "nodes"]),
    ("DoctorEdge", FieldRule::Inherit, &["node", "cursor"]),
    ("DoctorPayload", FieldRule::Inherit, &["doctor", "userErrors"]),
    ("DocumentRequest", FieldRule::Medical, &["download", "dueAt", "fileSha256", "id", "journal", "organisation", "overdue", "patientId", "periodFrom", "periodTo", "policyNumber", "purpose", "rejectionReasonCode", "rejectionReasonLabelRu", "rejectionText", "resubmissionOf", "resubmittedAs", "status", "statusLabelRu", "submittedAt", "type", "typeLabelRu", "updatedAt", "visitDate"]),
    ("DocumentRequestChange", FieldRule::Inherit, &["action", "at", "byRole", "byRoleLabelRu", "date", "sentTo", "status", "statusLabelRu", "time"]),
    ("DocumentRequestConnection", FieldRule::Inherit, &["edges", "nodes", "pageInfo"]),
    ("DocumentRequestEdge", FieldRule::Inherit, &["cursor", "node"]),
    ("DocumentRequestPayload", FieldRule::Inherit, &["documentRequest", "userErrors"]),
    ("IdentityVerificationPayload", FieldRule::Inherit, &["verification", "userErrors"]),
    ("IdentityVerificationView", FieldRule::Inherit, &["status", "statusLabelRu", "steps", "verifiedAt", "codeExpiresAt", "passportScanSha256", "passportScanReview", "passportScanReviewLabelRu", "passportScanRejectionReason", "lastUndoneReason"]),
    ("JournalDigest", FieldRule::Inherit, &["digest", "sealNumber", "sealedEvents", "sealedAt"]),
    ("LoadSnilsRegistryPayload", FieldRule::Inherit, &["loaded", "userErrors"]),
    ("MedicalService", FieldRule::Inherit, &["code", "name", "serviceType", "serviceTypeLabelRu", "form", "formLabelRu", "cost", "requiredDocuments"]),
    ("MedicalServiceConnection", FieldRule::Inherit, &["pageInfo", "edges", "nodes"]),
    ("MedicalServiceEdge", FieldRule::Inherit, &["node", "cursor"]),
    ("MedicalServicePayload", FieldRule::Inherit, &["service", "userErrors"]),
    ("Notification", FieldRule::Inherit, &["body", "createdAt", "deliveries", "kind", "kindLabelRu", "objectId", "objectType", "objectTypeLabelRu", "title"]),
    ("NotificationConnection", FieldRule::Inherit, &["edges", "nodes", "pageInfo"]),
    ("NotificationDelivery", FieldRule::Inherit, &["attempts", "channel", "channelLabelRu", "status", "statusLabelRu"]),
    ("NotificationEdge", FieldRule::Inherit, &["cursor", "node"]),
    ("NotificationPreferences", FieldRule::Inherit, &["channels", "email", "phone"]),
    ("NotificationPreferencesPayload", FieldRule::Inherit, &["preferences", "userErrors"]),
    ("Organisation", FieldRule::Inherit, &["id", "name", "region", "address", "timeZone", "workingHours", "departments", "specialisations"]),
    ("Organisation", FieldRule::Inherit, &["isPharmacy"]),
    ("OrganisationConnection", FieldRule::Inherit, &["pageInfo", "edges", "nodes"]),
    ("OrganisationEdge", FieldRule::Inherit, &["node", "cursor"]),
    ("OrganisationPayload", FieldRule::Inherit, &["organisation", "userErrors"]),
    ("PageInfo", FieldRule::Inherit, &["hasPreviousPage", "hasNextPage", "startCursor", "endCursor"]),
    // The review queue is for reviewers only (its root field says who); it shows the
    // profile the scan must match, and each read is recorded.
    ("PassportScanForReview", FieldRule::Inherit, &["patientId", "sha256", "size", "format", "uploadedAt", "download", "profile"]),
    ("PassportScanForReviewConnection", FieldRule::Inherit, &["edges", "nodes", "pageInfo"]),
    ("PassportScanForReviewEdge", FieldRule::Inherit, &["cursor", "node"]),
    ("PassportScanReviewResult", FieldRule::Inherit, &["patientId", "sha256", "review", "reviewLabelRu", "rejectionReason", "identityVerified"]),
    ("ReviewPassportScanPayload", FieldRule::Inherit, &["result", "userErrors"]),
    ("PatientProfile", FieldRule::Personal, &["patientId", "surname", "firstName", "patronymic", "birthDate", "sex", "sexLabelRu", "snils", "omsPolicy", "passportSeries", "passportNumber", "phone", "email", "registrationAddress", "actualAddress"]),
    ("PatientProfilePayload", FieldRule::Inherit, &["recorded", "userErrors"]),
    ("Policy", FieldRule::Medical, &["appliedAt", "birthDate", "download", "holderName", "id", "issuedAt", "kind", "kindLabelRu", "number", "region", "rejectionReason", "renewalRemindedAt", "snils", "status", "statusLabelRu", "updatedAt", "validFrom", "validUntil"]),
    ("PolicyConnection", FieldRule::Inherit, &["edges", "nodes", "pageInfo"]),
    ("PolicyEdge", FieldRule::Inherit, &["cursor", "node"]),
    ("PolicyPayload", FieldRule::Inherit, &["policy", "userErrors"]),
    ("Prescription", FieldRule::Medical, &["dosage", "download", "expiresAt", "id", "issuedAt", "journal", "medication", "organisation", "patientInitials", "pendingRequest", "pharmacy", "prescribingDoctor", "quantity", "status", "statusLabelRu", "validFrom", "validUntil", "verificationUrl"]),
    ("PrescriptionConnection", FieldRule::Inherit, &["edges", "nodes", "pageInfo"]),
    ("PrescriptionEdge", FieldRule::Inherit, &["cursor", "node"]),
    ("PrescriptionJournalEntry", FieldRule::Medical, &["action", "actorRole", "actorRoleLabelRu", "date", "note", "occurredAt", "prescribingDoctor", "status", "statusLabelRu", "time"]),
    ("PrescriptionPayload", FieldRule::Inherit, &["prescription", "userErrors"]),
    ("PrescriptionRequest", FieldRule::Medical, &["kind", "kindLabelRu", "pharmacyName", "reason"]),
    ("PrescriptionVerification", FieldRule::Inherit, &["dosage", "medication", "organisationName", "patientInitials", "prescriberName", "quantity", "result", "resultLabelRu", "validFrom", "validUntil"]),
    ("PublishSchedulePayload", FieldRule::Inherit, &["periodId", "slots", "userErrors"]),
    ("ReferralPayload", FieldRule::Inherit, &["referral", "userErrors"]),
    ("ReferralRequest", FieldRule::Medical, &["id", "specialty", "specialtyLabelRu", "reason", "status", "statusLabelRu", "decision", "requestedAt", "updatedAt", "organisation"]),
    ("ReferralRequestConnection", FieldRule::Inherit, &["pageInfo", "edges", "nodes"]),
    ("ReferralRequestEdge", FieldRule::Inherit, &["node", "cursor"]),
    ("RefreshSessionPayload", FieldRule::Inherit, &["tokens", "userErrors"]),
    ("RequestPasswordRecoveryPayload", FieldRule::Inherit, &["delivery", "userErrors"]),
    ("ResetPasswordPayload", FieldRule::Inherit, &["passwordChanged", "userErrors"]),
    ("SignInChallenge", FieldRule::Inherit, &["challengeId", "expiresAt", "method", "sentTo"]),
    ("SignInPayload", FieldRule::Inherit, &["challenge", "userErrors"]),
    ("SignOutEverywherePayload", FieldRule::Inherit, &["endedSessions", "userErrors"]),
    ("SignOutPayload", FieldRule::Inherit, &["signedOut", "userErrors"]),
    ("SignedInPayload", FieldRule::Inherit, &["account", "tokens", "userErrors"]),
    ("Slot", FieldRule::Inherit, &["id", "start", "end", "date", "time", "timeZone", "room", "status", "statusLabelRu", "doctorId"]),
    ("StartRegistrationPayload", FieldRule::Inherit, &["delivery", "userErrors"]),
    ("StartTotpEnrolmentPayload", FieldRule::Inherit, &["provisioningUri", "secret", "userErrors"]),
    ("TotpPayload", FieldRule::Inherit, &["account", "userErrors"]),
    ("UpdateMyProfilePayload", FieldRule::Inherit, &["profile", "userErrors"]),
    ("UserError", FieldRule::Inherit, &["field", "message", "code"]),
    ("VerificationStep", FieldRule::Inherit, &["step", "done", "doneAt", "stepLabelRu"]),
    ("Viewer", FieldRule::Inherit, &["accountId", "role", "roleLabelRu", "organisationId"]),
    // A download link inherits the rule of the field that gives it.
    ("DownloadLink", FieldRule::Inherit, &["path", "expiresAt"]),
    ("VisitOutcome", FieldRule::Medical, &["diagnosisCode", "diagnosisText", "recommendations", "prescriptions", "referrals"]),
];

const INTROSPECTION: &str =
    "{ __schema { queryType { name } mutationType { name } subscriptionType { name }
    types { name kind fields { name } } } }";

/// `Type.field` of every root field, and of every object field, from the live schema.
async fn schema_fields(client: &Client) -> (BTreeSet<String>, BTreeSet<String>) {
    let data = client.data(None, INTROSPECTION, json!({})).await;
    let schema = &data["__schema"];
    let roots: BTreeSet<&str> = ["queryType", "mutationType", "subscriptionType"]
        .iter()
        .filter_map(|k| schema[k]["name"].as_str())
        .collect();
    let mut root_fields = BTreeSet::new();
    let mut object_fields = BTreeSet::new();
    for ty in schema["types"].as_array().expect("types") {
        let name = ty["name"].as_str().expect("type name");
        if ty["kind"] != "OBJECT" || name.starts_with("__") {
            continue;
        }
        for field in ty["fields"].as_array().into_iter().flatten() {
            let key = format!("{name}.{}", field["name"].as_str().expect("field name"));
            if roots.contains(name) {
                root_fields.insert(key);
            } else {
                object_fields.insert(key);
            }
        }
    }
    (root_fields, object_fields)
}

/// What a call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Unauthenticated,
    Forbidden,
    Allowed,
}

fn expected(access: Access, role: Option<Role>) -> Outcome {
    match (access, role) {
        (Access::Public, _) => Outcome::Allowed,
        (_, None) => Outcome::Unauthenticated,
        (Access::SignedIn, Some(_)) => Outcome::Allowed,
        (Access::Roles(roles), Some(role)) if roles.contains(&role) => Outcome::Allowed,
        (Access::Roles(_), Some(_)) => Outcome::Forbidden,
    }
}

/// Classifies a response; a call the schema refuses (a bad sample) fails the test.
fn outcome_of(field: &str, response: &Value) -> Outcome {
    let codes: Vec<&str> = response["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["extensions"]["code"].as_str().unwrap_or("NO_CODE"))
        .collect();
    if codes.contains(&"UNAUTHENTICATED") {
        Outcome::Unauthenticated
    } else if codes.contains(&"FORBIDDEN") {
        Outcome::Forbidden
    } else {
        for code in &codes {
            assert!(
                !matches!(
                    *code,
                    "NO_CODE" | "INTERNAL" | "GRAPHQL_VALIDATION_FAILED" | "GRAPHQL_PARSE_FAILED"
                ),
                "{field}: the sample call itself is wrong or failed: {response}"
            );
        }
        Outcome::Allowed
    }
}

/// The ids the sample calls name.
struct Fixture {
    organisation: Uuid,
    values: BTreeMap<&'static str, String>,
}

async fn fixture(client: &Client) -> Fixture {
    let admin = client.token(Role::Admin, None);
    let details = r#"{ name: "Клиника №3", region: "Москва", address: "ул. Садовая, 3", timeZone: "Europe/Moscow", workingHours: "08:00–20:00", departments: ["Терапия"], specialisations: ["therapist"] }"#;
    let registered = register_organisation(
        client,
        &admin,
        with(
            organisation_details("Клиника №3"),
            json!({ "address": "ул. Садовая, 3" }),
        ),
    )
    .await;
    let (org_id, organisation) = (registered.id, registered.uuid);
    let registrar = client.token(Role::Registrar, Some(organisation));
    let doctor = with(
        doctor_input("Иванова", &org_id),
        json!({ "patronymic": null, "qualification": "высшая", "serviceCodes": [] }),
    );
    let doctor_id = register_doctor(client, &registrar, doctor).await.id;
    let tomorrow = (Utc::now() + Duration::days(1))
        .with_timezone(&chrono_tz::Europe::Moscow)
        .format("%Y-%m-%d")
        .to_string();
    let mut values = BTreeMap::new();
    values.insert("$ORG_DETAILS", details.to_string());
    values.insert("$ORG", org_id);
    values.insert("$DOCTOR", doctor_id);
    values.insert("$PATIENT", ids::encode("Account", PATIENT_ID).to_string());
    values.insert(
        "$APPOINTMENT",
        ids::encode("Appointment", Uuid::now_v7()).to_string(),
    );
    values.insert(
        "$REFERRAL",
        ids::encode("ReferralRequest", Uuid::now_v7()).to_string(),
    );
    values.insert(
        "$PRESCRIPTION",
        ids::encode("Prescription", Uuid::now_v7()).to_string(),
    );
    values.insert(
        "$DOCUMENT_REQUEST",
        ids::encode("DocumentRequest", Uuid::now_v7()).to_string(),
    );
    values.insert("$POLICY", ids::encode("Policy", Uuid::now_v7()).to_string());
    values.insert("$TOMORROW", tomorrow);
    Fixture {
        organisation,
        values,
    }
}

/// The patient of the fixture.
const PATIENT_ID: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);

fn fill(sample: &str, fixture: &Fixture) -> String {
    // Longer placeholders first ($ORG_DETAILS before $ORG).
    let mut text = sample.to_string();
    let mut keys: Vec<&&str> = fixture.values.keys().collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
    for key in keys {
        text = text.replace(*key, &fixture.values[*key]);
    }
    text
}

conformance!(
    every_field_has_a_rule_and_every_role_meets_it,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let (root_fields, object_fields) = schema_fields(&server).await;

        // Every field has a rule; every rule names a field.
        let root_rules: BTreeSet<String> =
            ROOT_RULES.iter().map(|(f, _, _)| f.to_string()).collect();
        assert_eq!(
            root_rules.len(),
            ROOT_RULES.len(),
            "a root field has two rules"
        );
        let unruled: Vec<&String> = root_fields.difference(&root_rules).collect();
        assert!(
            unruled.is_empty(),
            "root fields without a rule in ROOT_RULES: {unruled:?}"
        );
        let stale: Vec<&String> = root_rules.difference(&root_fields).collect();
        assert!(
            stale.is_empty(),
            "rules for fields that no longer exist: {stale:?}"
        );
        let mut object_rules = BTreeSet::new();
        for (ty, _, fields) in OBJECT_RULES {
            for field in *fields {
                assert!(
                    object_rules.insert(format!("{ty}.{field}")),
                    "{ty}.{field} has two rules"
                );
            }
        }
        let unruled: Vec<&String> = object_fields.difference(&object_rules).collect();
        assert!(
            unruled.is_empty(),
            "object fields without a rule in OBJECT_RULES: {unruled:?}"
        );
        let stale: Vec<&String> = object_rules.difference(&object_fields).collect();
        assert!(
            stale.is_empty(),
            "object rules for fields that no longer exist: {stale:?}"
        );

        // Every root field, every role.
        let fixture = fixture(&server).await;
        let roles: Vec<Option<Role>> = std::iter::once(None)
            .chain(
                [
                    Patient, Registrar, Doctor, Lab, Pharmacist, Auditor, Analyst, Admin,
                ]
                .map(Some),
            )
            .collect();
        let mut mismatches = Vec::new();
        for (field, access, sample) in ROOT_RULES {
            if field.starts_with("Subscription.") {
                continue;
            }
            assert!(!sample.is_empty(), "{field}: no sample call");
            let query = fill(sample, &fixture);
            for role in &roles {
                let token = role.map(|role| match role {
                    Patient => server.token_for(PATIENT_ID, role, None),
                    r if r.is_clinic_staff() => server.token(r, Some(fixture.organisation)),
                    r => server.token(r, None),
                });
                let response = server.graphql(token.as_deref(), &query, json!({})).await;
                let got = outcome_of(field, &response);
                let want = expected(*access, *role);
                if got != want {
                    mismatches.push(format!(
                        "{field} as {role:?}: expected {want:?}, got {got:?}: {response}"
                    ));
                }
            }
        }
        assert!(
            mismatches.is_empty(),
            "authorisation mismatches:\n{}",
            mismatches.join("\n")
        );
        server.stop().await;
    }
);

conformance!(other_peoples_ids_reveal_nothing, |test_db| async move {
    let server = Server::start(&test_db, |_| {}).await;
    let fixture = fixture(&server).await;
    let org_id = fixture.values["$ORG"].clone();
    let registrar = server.token(Role::Registrar, Some(fixture.organisation));
    let tomorrow = fixture.values["$TOMORROW"].clone();
    let published = server
        .data(
            Some(&registrar),
            &format!(r#"mutation {{ publishSchedule(input: {{ doctorId: "{}", date: "{tomorrow}", start: "09:00", end: "10:00", slotMinutes: 20, room: "5", serviceCodes: [] }}) {{ slots {{ id }} userErrors {{ code message }} }} }}"#, fixture.values["$DOCTOR"]),
            json!({}),
        )
        .await;
    let slot = published["publishSchedule"]["slots"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("slots: {published}"))
        .to_string();
    let owner_id = Uuid::now_v7();
    let owner = server.token_for(owner_id, Role::Patient, None);
    server
        .data(
            Some(&owner),
            r#"mutation { recordPatientProfile(input: { surname: "Белова", firstName: "Ада", birthDate: "1990-01-01", sex: FEMALE }) { recorded } }"#,
            json!({}),
        )
        .await;
    let booked = server
        .data(
            Some(&owner),
            "mutation($s: ID!) { bookAppointment(input: { slotId: $s }) { appointment { id } userErrors { code } } }",
            json!({ "s": slot }),
        )
        .await;
    let appointment = booked["bookAppointment"]["appointment"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("booked: {booked}"))
        .to_string();
    let referral = server
        .data(
            Some(&owner),
            "mutation($o: ID!) { requestReferral(input: { organisationId: $o, specialty: \"cardiologist\", reason: \"боли\" }) { referral { id } } }",
            json!({ "o": org_id }),
        )
        .await["requestReferral"]["referral"]["id"]
        .as_str()
        .expect("referral")
        .to_string();
    let missing_appointment = ids::encode("Appointment", Uuid::now_v7()).to_string();

    // Another patient: the same answer as for an id that does not exist.
    let other = server.token(Role::Patient, None);
    for id in [&appointment, &referral, &missing_appointment] {
        let seen = server
            .data(
                Some(&other),
                "query($id: ID!) { node(id: $id) { id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(seen["node"], Value::Null, "{id}");
    }
    for (mutation, extra) in [
        ("cancelAppointment", ""),
        ("reviewVisit", ", rating: 5"),
        ("rescheduleAppointment", ", slotId: \"bm8tc2xvdA\""),
    ] {
        let input = |id: &str| {
            format!("mutation {{ {mutation}(input: {{ appointmentId: \"{id}\"{extra} }}) {{ appointment {{ id }} userErrors {{ field code message }} }} }}")
        };
        let theirs = server
            .data(Some(&other), &input(&appointment), json!({}))
            .await;
        let nobodys = server
            .data(Some(&other), &input(&missing_appointment), json!({}))
            .await;
        assert_eq!(
            theirs, nobodys,
            "{mutation} tells another patient's appointment apart"
        );
        assert_eq!(
            theirs[mutation]["userErrors"][0]["code"], "NOT_FOUND",
            "{theirs}"
        );
    }

    // Global ids of other types are not accepted in place of the right one.
    let doctor_as_appointment = fixture.values["$DOCTOR"].clone();
    let wrong_type = server
        .data(
            Some(&owner),
            "mutation($id: ID!) { cancelAppointment(input: { appointmentId: $id }) { userErrors { code } } }",
            json!({ "id": doctor_as_appointment }),
        )
        .await;
    assert_eq!(
        wrong_type["cancelAppointment"]["userErrors"][0]["code"],
        "NOT_FOUND"
    );
    let (_, appointment_uuid) = ids::decode(&appointment).expect("id");
    for type_name in ["Account", "Doctor", "Organisation", "Slot"] {
        let disguised = ids::encode(type_name, appointment_uuid).to_string();
        let seen = server
            .data(
                Some(&owner),
                "query($id: ID!) { node(id: $id) { id } }",
                json!({ "id": disguised }),
            )
            .await;
        assert_eq!(
            seen["node"],
            Value::Null,
            "{type_name} id of an appointment"
        );
    }
    let as_referral = server
        .data(
            Some(&registrar),
            "mutation($id: ID!) { decideReferral(input: { referralId: $id, approve: true }) { userErrors { code } } }",
            json!({ "id": appointment }),
        )
        .await;
    assert_eq!(
        as_referral["decideReferral"]["userErrors"][0]["code"],
        "NOT_FOUND"
    );

    // Staff of another organisation.
    let elsewhere = Uuid::now_v7();
    let other_doctor = server.token(Role::Doctor, Some(elsewhere));
    let other_registrar = server.token(Role::Registrar, Some(elsewhere));
    for id in [&appointment, &referral] {
        let seen = server
            .data(
                Some(&other_doctor),
                "query($id: ID!) { node(id: $id) { id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(seen["node"], Value::Null);
    }
    let decide = server
        .data(
            Some(&other_registrar),
            "mutation($id: ID!) { decideReferral(input: { referralId: $id, approve: true }) { userErrors { code } } }",
            json!({ "id": referral }),
        )
        .await;
    assert_eq!(
        decide["decideReferral"]["userErrors"][0]["code"],
        "NOT_FOUND"
    );
    let fulfil = server
        .data(
            Some(&other_doctor),
            "mutation($id: ID!) { fulfilVisit(input: { appointmentId: $id, diagnosisCode: \"J06.9\", diagnosisText: \"x\" }) { userErrors { code } } }",
            json!({ "id": appointment }),
        )
        .await;
    assert_eq!(fulfil["fulfilVisit"]["userErrors"][0]["code"], "NOT_FOUND");
    let list = server
        .graphql(
            Some(&other_registrar),
            "query($o: ID!, $d: String!) { organisationAppointments(organisationId: $o, date: $d) { edges { cursor } } }",
            json!({ "o": org_id, "d": tomorrow }),
        )
        .await;
    assert_eq!(list["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let profile = server
        .data(
            Some(&other_registrar),
            "query($p: ID!) { patientProfile(patientId: $p) { surname } }",
            json!({ "p": ids::encode("Account", owner_id) }),
        )
        .await;
    assert_eq!(profile["patientProfile"], Value::Null);
    // The owner's own organisation's staff do see it.
    let known = server
        .data(
            Some(&registrar),
            "query($p: ID!) { patientProfile(patientId: $p) { surname } }",
            json!({ "p": ids::encode("Account", owner_id) }),
        )
        .await;
    assert_eq!(known["patientProfile"]["surname"], "Белова");
    server.stop().await;
});

/// How a patient stands towards the fixture's organisation, and whether that is
/// its care (issue 17): the one rule behind every staff read of a profile and
/// every prescription.
#[derive(Debug, Clone, Copy)]
enum Relation {
    Nothing,
    Booked,
    BookedThenCancelled,
    ReferralRequested,
    DocumentRequested,
}

const CARE_CASES: &[(Relation, bool)] = &[
    (Relation::Nothing, false),
    (Relation::Booked, true),
    (Relation::BookedThenCancelled, false),
    (Relation::ReferralRequested, true),
    (Relation::DocumentRequested, true),
];

conformance!(
    staff_reach_only_patients_in_their_care,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let fixture = fixture(&server).await;
        let org_id = fixture.values["$ORG"].clone();
        let doctor_uuid = ids::decode_as(&fixture.values["$DOCTOR"], "Doctor").expect("doctor");
        let doctor = server.token_for(doctor_uuid, Role::Doctor, Some(fixture.organisation));
        let registrar = server.token(Role::Registrar, Some(fixture.organisation));
        let other_doctor = server.token(Role::Doctor, Some(Uuid::now_v7()));
        let tomorrow = fixture.values["$TOMORROW"].clone();
        let published = server
        .data(
            Some(&registrar),
            &format!(r#"mutation {{ publishSchedule(input: {{ doctorId: "{}", date: "{tomorrow}", start: "09:00", end: "11:00", slotMinutes: 20, room: "5", serviceCodes: [] }}) {{ slots {{ id }} userErrors {{ code message }} }} }}"#, fixture.values["$DOCTOR"]),
            json!({}),
        )
        .await;
        let mut slots: Vec<String> = published["publishSchedule"]["slots"]
            .as_array()
            .unwrap_or_else(|| panic!("slots: {published}"))
            .iter()
            .map(|s| s["id"].as_str().expect("slot").to_string())
            .collect();
        let today = Utc::now()
            .with_timezone(&chrono_tz::Europe::Moscow)
            .date_naive();
        let until = today + Duration::days(10);
        let profile_query = "query($p: ID!) { patientProfile(patientId: $p) { surname birthDate phone snils passportNumber actualAddress } }";
        let mut mismatches = Vec::new();
        for (relation, in_care) in CARE_CASES {
            let patient = Uuid::now_v7();
            let own = server.token_for(patient, Role::Patient, None);
            let updated = server
            .data(
                Some(&own),
                r#"mutation { updateMyProfile(input: { surname: "Белова", firstName: "Ада", birthDate: "1990-01-01", sex: FEMALE, snils: "112 233 445 95", passportSeries: "45 08", passportNumber: "123456", phone: "+79161234567", actualAddress: "Москва, ул. Арбат, 10" }) { userErrors { field code message } } }"#,
                json!({}),
            )
            .await;
            assert_eq!(
                updated["updateMyProfile"]["userErrors"],
                json!([]),
                "{updated}"
            );
            let p = ids::encode("Account", patient).to_string();
            match relation {
                Relation::Nothing => {}
                Relation::Booked | Relation::BookedThenCancelled => {
                    // The registrar books by phone, on the patient's behalf.
                    let booked = server
                    .data(
                        Some(&registrar),
                        "mutation($s: ID!, $p: ID!) { bookAppointment(input: { slotId: $s, patientId: $p }) { appointment { id } userErrors { code message } } }",
                        json!({ "s": slots.pop().expect("a free slot"), "p": p }),
                    )
                    .await;
                    let id = booked["bookAppointment"]["appointment"]["id"]
                        .as_str()
                        .unwrap_or_else(|| panic!("booked: {booked}"))
                        .to_string();
                    if matches!(relation, Relation::BookedThenCancelled) {
                        let cancelled = server
                        .data(
                            Some(&registrar),
                            "mutation($id: ID!) { cancelAppointment(input: { appointmentId: $id }) { userErrors { code } } }",
                            json!({ "id": id }),
                        )
                        .await;
                        assert_eq!(cancelled["cancelAppointment"]["userErrors"], json!([]));
                    }
                }
                Relation::ReferralRequested => {
                    let asked = server
                    .data(
                        Some(&own),
                        "mutation($o: ID!) { requestReferral(input: { organisationId: $o, specialty: \"therapist\", reason: \"боли\" }) { userErrors { code message } } }",
                        json!({ "o": org_id }),
                    )
                    .await;
                    assert_eq!(asked["requestReferral"]["userErrors"], json!([]), "{asked}");
                }
                Relation::DocumentRequested => {
                    let asked = server
                    .data(
                        Some(&own),
                        "mutation($o: ID!) { requestDocument(input: { organisationId: $o, type: HEALTH_CERTIFICATE, periodFrom: \"2026-01-01\", periodTo: \"2026-02-01\" }) { userErrors { field code message } } }",
                        json!({ "o": org_id }),
                    )
                    .await;
                    assert_eq!(asked["requestDocument"]["userErrors"], json!([]), "{asked}");
                }
            }
            let vars = json!({ "p": p });
            let by_registrar = server
                .data(Some(&registrar), profile_query, vars.clone())
                .await;
            let by_doctor = server
                .data(Some(&doctor), profile_query, vars.clone())
                .await;
            let by_stranger = server
                .data(Some(&other_doctor), profile_query, vars.clone())
                .await;
            let prescribed = server
            .data(
                Some(&doctor),
                &format!(r#"mutation {{ issuePrescription(input: {{ patientId: "{p}", medication: "Амоксициллин", dosage: "по 1 таблетке 2 раза в день", quantity: 1, validFrom: "{today}", validUntil: "{until}" }}) {{ userErrors {{ code }} }} }}"#),
                json!({}),
            )
            .await;
            let registrar_sees = by_registrar["patientProfile"] != Value::Null;
            // A registrar gets name, birth date and phone; never documents or addresses.
            let registrar_minimal = by_registrar["patientProfile"]["snils"] == Value::Null
                && by_registrar["patientProfile"]["passportNumber"] == Value::Null
                && by_registrar["patientProfile"]["actualAddress"] == Value::Null;
            let doctor_sees = by_doctor["patientProfile"]["snils"] == "112-233-445 95";
            let may_prescribe = prescribed["issuePrescription"]["userErrors"] == json!([]);
            let refused_as_not_in_care =
                prescribed["issuePrescription"]["userErrors"][0]["code"] == "NOT_IN_CARE";
            let outcome = (
                registrar_sees,
                registrar_minimal,
                doctor_sees,
                may_prescribe,
                refused_as_not_in_care,
                by_stranger["patientProfile"] == Value::Null,
            );
            let expected = (*in_care, true, *in_care, *in_care, !*in_care, true);
            if outcome != expected {
                mismatches.push(format!(
                "{relation:?}: (registrar sees, registrar minimal, doctor sees, may prescribe, NOT_IN_CARE, stranger blind) = {outcome:?}, expected {expected:?}\n  registrar: {by_registrar}\n  doctor: {by_doctor}\n  prescribe: {prescribed}"
            ));
            }
        }
        assert!(
            mismatches.is_empty(),
            "care mismatches:\n{}",
            mismatches.join("\n")
        );
        server.stop().await;
    }
);
