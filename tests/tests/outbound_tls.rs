//! TLS to the outside: e-mail over STARTTLS and implicit TLS to aiosmtpd, SMS
//! to an HTTPS gateway, each trusting a private authority from a CA file; a
//! peer whose certificate is not trusted is refused. Certificates are made
//! fresh by each test.

use kabinet_adapters::outbound::CaBundle;
use kabinet_adapters::sms::{SmsGatewayNotifier, TIMEOUTS};
use kabinet_adapters::smtp::SmtpNotifier;
use kabinet_domain::notify::{Channel, Message, Notifier};
use kabinet_graphql::Application;
use kabinet_tests::accounts::START;
use kabinet_tests::delivery::{SmsReceiver, SMS_TOKEN};
use kabinet_tests::outbound::{implicit_tls_relay, starttls_relay, TestCertificates, TlsFront};
use kabinet_tests::server::Server;
use kabinet_tests::{conformance, TestDb};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

const FROM: &str = "Kabinet <no-reply@kabinet.test>";

fn email_to(to: &str) -> Message {
    Message {
        channel: Channel::Email,
        to: to.into(),
        subject: "Запись подтверждена".into(),
        body: "Ждём вас 12 мая в 10:00.".into(),
    }
}

fn unique_address() -> String {
    format!("patient.{}@example.ru", Uuid::new_v4().simple())
}

#[tokio::test]
async fn mail_reaches_a_relay_that_requires_starttls() {
    let Some(certs) = TestCertificates::generate() else {
        return;
    };
    let Some(relay) = starttls_relay(&certs).await else {
        return;
    };
    let roots = CaBundle::read(&certs.ca).expect("CA file");
    let notifier = SmtpNotifier::new(&format!("{}?tls=required", relay.url), FROM)
        .expect("notifier")
        .trusting(&roots)
        .expect("trusts the CA");
    let to = unique_address();
    notifier.send(&email_to(&to)).await.expect("delivered");
    let received = relay.nth_message_to(&to, 1).await;
    assert!(received.contains("Ждём вас 12 мая"), "{received}");
}

#[tokio::test]
async fn a_relay_that_requires_starttls_takes_no_plain_mail() {
    // Shows the relay above really insists: plain text gets nowhere with it.
    let Some(certs) = TestCertificates::generate() else {
        return;
    };
    let Some(relay) = starttls_relay(&certs).await else {
        return;
    };
    let notifier = SmtpNotifier::new(&format!("{}?tls=none", relay.url), FROM).expect("notifier");
    let to = unique_address();
    let refused = notifier.send(&email_to(&to)).await.expect_err("refused");
    assert!(refused.reason.contains("STARTTLS"), "{}", refused.reason);
    assert!(relay.messages_to(&to).is_empty());
}

#[tokio::test]
async fn mail_reaches_a_relay_over_implicit_tls() {
    let Some(certs) = TestCertificates::generate() else {
        return;
    };
    let Some(relay) = implicit_tls_relay(&certs).await else {
        return;
    };
    assert!(relay.url.starts_with("smtps://"), "{}", relay.url);
    let roots = CaBundle::read(&certs.ca).expect("CA file");
    let notifier = SmtpNotifier::new(&relay.url, FROM)
        .expect("notifier")
        .trusting(&roots)
        .expect("trusts the CA");
    let to = unique_address();
    notifier.send(&email_to(&to)).await.expect("delivered");
    let received = relay.nth_message_to(&to, 1).await;
    assert!(received.contains("Ждём вас 12 мая"), "{received}");
}

#[tokio::test]
async fn a_relay_whose_certificate_is_not_trusted_is_refused() {
    let Some(certs) = TestCertificates::generate() else {
        return;
    };
    let Some(implicit) = implicit_tls_relay(&certs).await else {
        return;
    };
    let Some(starttls) = starttls_relay(&certs).await else {
        return;
    };
    // The public roots do not know the private authority; nor does another one.
    let Some(other) = TestCertificates::generate() else {
        return;
    };
    let stranger = CaBundle::read(&other.ca).expect("CA file");
    let to = unique_address();
    for (url, relay) in [
        (implicit.url.clone(), &implicit),
        (format!("{}?tls=required", starttls.url), &starttls),
    ] {
        let public = SmtpNotifier::new(&url, FROM).expect("notifier");
        let private = SmtpNotifier::new(&url, FROM)
            .expect("notifier")
            .trusting(&stranger)
            .expect("trusts the other CA");
        for notifier in [public, private] {
            let refused = notifier.send(&email_to(&to)).await.expect_err("refused");
            assert!(
                refused.reason.to_lowercase().contains("certificate"),
                "{url}: {}",
                refused.reason
            );
        }
        assert!(relay.messages_to(&to).is_empty(), "{url}");
    }
}

fn sms_to(to: &str) -> Message {
    Message {
        channel: Channel::Sms,
        to: to.into(),
        subject: String::new(),
        body: "Код 482913".into(),
    }
}

#[tokio::test]
async fn an_sms_reaches_an_https_gateway_trusted_by_its_ca_file() {
    let Some(certs) = TestCertificates::generate() else {
        return;
    };
    let gateway = SmsReceiver::start().await;
    let front = TlsFront::start(&certs, &gateway.url).await;
    let roots = CaBundle::read(&certs.ca).expect("CA file");
    let notifier = SmsGatewayNotifier::with_options(
        &front.url,
        Some(SMS_TOKEN.to_string()),
        Some(&roots),
        TIMEOUTS,
    )
    .expect("notifier");
    notifier
        .send(&sms_to("+79161230001"))
        .await
        .expect("delivered");
    assert_eq!(
        gateway.nth_message_to("+79161230001", 1).await,
        "Код 482913"
    );
}

#[tokio::test]
async fn an_https_gateway_with_an_untrusted_certificate_is_refused() {
    let Some(certs) = TestCertificates::generate() else {
        return;
    };
    let gateway = SmsReceiver::start().await;
    let front = TlsFront::start(&certs, &gateway.url).await;
    let refused = SmsGatewayNotifier::new(&front.url, Some(SMS_TOKEN.to_string()))
        .expect("notifier")
        .send(&sms_to("+79161230002"))
        .await
        .expect_err("refused");
    assert!(
        refused.reason.to_lowercase().contains("certificate"),
        "{}",
        refused.reason
    );
    assert!(gateway.messages_to("+79161230002").is_empty());
}

conformance!(
    a_registration_code_travels_over_smtps_trusted_by_the_configured_ca_file,
    |test_db: TestDb| async move {
        let Some(certs) = TestCertificates::generate() else {
            return;
        };
        let Some(relay) = implicit_tls_relay(&certs).await else {
            return;
        };
        let configure = |c: &mut kabinet_graphql::config::ServeConfig| {
            c.delivery.smtp_url = Some(SecretString::from(relay.url.clone()));
            c.delivery.mail_from = Some(FROM.into());
            c.delivery.smtp_ca_file = Some(certs.ca.clone());
        };
        // A CA file that is not there stops the start with a clear reason.
        let mut missing = kabinet_graphql::config::ServeConfig::for_tests(
            &test_db.url,
            kabinet_tests::server::SECRET,
        );
        configure(&mut missing);
        missing.delivery.smtp_ca_file = Some(certs.ca.with_file_name("absent.pem"));
        let refused = Application::build(missing)
            .await
            .err()
            .expect("a missing CA file is refused");
        assert!(
            format!("{refused:#}").contains("KABINET_SMTP_CA_FILE"),
            "{refused:#}"
        );

        let server = Server::start(&test_db, configure).await;
        let email = unique_address();
        let started = server
            .data(None, START, json!({ "input": { "contact": email } }))
            .await["startRegistration"]
            .clone();
        assert_eq!(started["delivery"]["channel"], "EMAIL", "{started}");
        let code = relay.code_in(&email, 1).await;
        assert_eq!(code.len(), 6);
        server.stop().await;
    }
);
