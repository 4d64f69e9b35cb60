//! E-prescriptions (E2): a doctor issues, the patient sends it to a pharmacy,
//! the pharmacy prepares and dispenses it; cancellation, expiry, and the
//! patient's requests that the prescribing doctor decides. The QR token that
//! lets a pharmacist verify a printed prescription lives in [`token`].

mod prescription;
pub mod token;

pub use prescription::{
    Medication, Pharmacy, Prescriber, Prescription, PrescriptionCommand, PrescriptionError,
    PrescriptionEvent, PrescriptionStatus, RequestKind, Validity, MAX_START_AHEAD_DAYS,
    MAX_VALIDITY_DAYS,
};
pub use token::{PrescriptionSigner, TokenError};
