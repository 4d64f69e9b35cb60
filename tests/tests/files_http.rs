//! The content-addressed file store and its signed download links over real HTTP.

use chrono::{Duration, Utc};
use kabinet_domain::Role;
use kabinet_graphql::files::{FileLinks, FileStore};
use kabinet_pdf::{render, PdfBlock, PdfDocument, MEDIA_TYPE};
use kabinet_tests::conformance;
use kabinet_tests::server::get;
use kabinet_tests::server::{Server, SECRET};
use uuid::Uuid;

conformance!(
    a_signed_link_downloads_only_for_its_account_until_it_expires,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let store = FileStore::new(test_db.db.clone());
        let pdf = render(&PdfDocument {
            title: "Справка".to_string(),
            blocks: vec![PdfBlock::Paragraph("Текст справки".to_string())],
            qr: None,
        });
        let sha = store.store(&pdf, MEDIA_TYPE).await.expect("store");
        assert_eq!(
            store.store(&pdf, MEDIA_TYPE).await.expect("store again"),
            sha,
            "idempotent"
        );
        assert_eq!(
            store.load(&sha).await.expect("load").map(|f| f.bytes),
            Some(pdf.clone())
        );

        let owner = Uuid::now_v7();
        let token = server.token_for(owner, Role::Patient, None);
        let links = FileLinks::new(SECRET.as_bytes());
        let link = links.download_link(&sha, owner, Utc::now() + Duration::minutes(5));

        let (status, body) = get(&server, &link, Some(&token)).await;
        assert_eq!(status, 200);
        assert_eq!(body, pdf);

        // No bearer token, or another account's.
        assert_eq!(get(&server, &link, None).await.0, 401);
        let stranger = server.token(Role::Patient, None);
        let (status, body) = get(&server, &link, Some(&stranger)).await;
        assert_eq!(status, 403);
        assert!(String::from_utf8_lossy(&body).contains("INVALID_LINK"));

        // An altered expiry or signature.
        let altered = link.replace("exp=", "exp=1");
        assert_eq!(get(&server, &altered, Some(&token)).await.0, 403);
        let flipped = format!("{}0", &link[..link.len() - 1]);
        let flipped = if flipped == link {
            format!("{}1", &link[..link.len() - 1])
        } else {
            flipped
        };
        assert_eq!(get(&server, &flipped, Some(&token)).await.0, 403);
        assert_eq!(
            get(&server, &format!("/files/{sha}"), Some(&token)).await.0,
            403
        );

        // Expired.
        let expired = links.download_link(&sha, owner, Utc::now() - Duration::seconds(1));
        let (status, body) = get(&server, &expired, Some(&token)).await;
        assert_eq!(status, 410);
        assert!(String::from_utf8_lossy(&body).contains("LINK_EXPIRED"));

        // A validly signed link to nothing.
        let missing =
            links.download_link(&"0".repeat(64), owner, Utc::now() + Duration::minutes(5));
        assert_eq!(get(&server, &missing, Some(&token)).await.0, 404);
        server.stop().await;
    }
);
