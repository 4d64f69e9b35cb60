//! Accounts for end-to-end tests: the registration and sign-in operations,
//! a server wired to the test SMS gateway, unique phone numbers, and a patient
//! registered the way a person does it.

use secrecy::SecretString;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::delivery::{SmsReceiver, SMS_TOKEN};
use crate::server::Client;
use kabinet_graphql::config::ServeConfig;

/// The password test accounts register with.
pub const PASSWORD: &str = "зимний-вечер-42";

pub const START: &str =
    "mutation($input: StartRegistrationInput!) { startRegistration(input: $input) {
    delivery { channel sentTo expiresAt } userErrors { field message code } } }";
pub const CONFIRM: &str =
    "mutation($input: ConfirmRegistrationInput!) { confirmRegistration(input: $input) {
    account { id login loginKind role status totpEnabled termsVersion }
    tokens { accessToken refreshToken accessTokenExpiresAt sessionExpiresAt }
    userErrors { field message code } } }";
pub const SIGN_IN: &str = "mutation($input: SignInInput!) { signIn(input: $input) {
    challenge { challengeId method sentTo expiresAt } userErrors { field message code } } }";
pub const REFRESH: &str = "mutation($input: RefreshSessionInput!) { refreshSession(input: $input) {
    tokens { accessToken refreshToken } userErrors { field message code } } }";

/// Sends the server's SMS to the test gateway `sms`.
pub fn use_sms_gateway(sms: &SmsReceiver, config: &mut ServeConfig) {
    config.delivery.sms_gateway_url = Some(sms.url.clone());
    config.delivery.sms_gateway_token = Some(SecretString::from(SMS_TOKEN.to_string()));
}

/// The codes of a payload's `userErrors`, in order.
pub fn error_codes(payload: &Value) -> Vec<String> {
    payload["userErrors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["code"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A mobile number unique to this test run.
pub fn unique_phone() -> String {
    let n = Uuid::new_v4().as_u128() % 10_000_000;
    format!("+7916{n:07}")
}

/// Registers `phone` with the code read from the SMS gateway and returns the
/// `confirmRegistration` payload (account and tokens).
pub async fn register(client: &Client, sms: &SmsReceiver, phone: &str) -> Value {
    let started = client
        .data(None, START, json!({ "input": { "contact": phone } }))
        .await;
    assert_eq!(
        error_codes(&started["startRegistration"]),
        Vec::<String>::new(),
        "{started}"
    );
    let code = sms.last_code_to(phone).await;
    let confirmed = client
        .data(
            None,
            CONFIRM,
            json!({ "input": { "contact": phone, "code": code, "password": PASSWORD, "acceptTerms": true } }),
        )
        .await["confirmRegistration"]
        .clone();
    assert_eq!(error_codes(&confirmed), Vec::<String>::new(), "{confirmed}");
    confirmed
}
