//! The marketflow programs' registry client (`marketflow_core::Codec`, with `registry.basic_auth`)
//! against the `registry` binary asking for basic auth on its mutations, as Confluent's does with
//! `basic.auth.user.info`: without the credentials a schema cannot be registered, and the error
//! says why; with them a listing is encoded (registering its schemas) and decoded back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use marketflow_core::config::RegistryConfig;
use marketflow_core::record::Listing;
use marketflow_core::schema::Part;
use marketflow_core::{Codec, Config};
use secrecy::SecretString;
use support::Registry;

const CREDENTIALS: &str = "marketflow:s3cr:et";

fn registry_config(url: &str, basic_auth: Option<&str>) -> RegistryConfig {
    RegistryConfig {
        url: url.to_owned(),
        basic_auth: basic_auth.map(SecretString::from),
        ..RegistryConfig::default()
    }
}

fn listing() -> Listing {
    Listing {
        product_id: 42,
        title: "자전거".into(),
        price: Some(120_000),
        condition: "used".into(),
        sale_status: "on_sale".into(),
        ..Listing::default()
    }
}

#[tokio::test]
async fn the_codec_registers_and_reads_with_the_configured_credentials_only() {
    let data = tempfile::tempdir().unwrap();
    let registry = Registry::start_with(data.path(), &[("REGISTRY_BASIC_AUTH", CREDENTIALS)]).await;
    let listing = listing();

    let anonymous = Codec::new(&registry_config(&registry.url, None)).unwrap();
    let refused = anonymous
        .encode_record("listings", &listing.key(), &listing)
        .await
        .expect_err("a registration without credentials is refused");
    let message = refused.to_string();
    assert!(
        message.contains("listings-key") && message.contains("401"),
        "the error names the subject and the refusal: {message}"
    );

    let wrong = Codec::new(&registry_config(&registry.url, Some("marketflow:guess"))).unwrap();
    assert!(
        wrong
            .encode_record("listings", &listing.key(), &listing)
            .await
            .is_err(),
        "a wrong password is refused"
    );

    let authorized = Codec::new(&registry_config(&registry.url, Some(CREDENTIALS))).unwrap();
    let (_key, value) = authorized
        .encode_record("listings", &listing.key(), &listing)
        .await
        .expect("registered with the credentials");
    let decoded: Listing = authorized
        .decode_for("listings", Part::Value, &value)
        .await
        .unwrap();
    assert_eq!(decoded, listing);

    // The plain HTTP client every other registry request goes through sends them too.
    let register = |config: RegistryConfig| async move {
        config
            .http_client(std::time::Duration::from_secs(10))
            .unwrap()
            .post(format!("{}/subjects/plain-value/versions", config.url))
            .header("content-type", support::MEDIA_TYPE)
            .body(r#"{"schema": "\"string\""}"#)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(register(registry_config(&registry.url, None)).await, 401);
    assert!(
        register(registry_config(&registry.url, Some(CREDENTIALS)))
            .await
            .is_success()
    );
}

#[test]
fn a_basic_auth_setting_without_user_or_password_is_refused_at_load_and_never_shown() {
    for bad in ["nocolon", ":password", "user:"] {
        let figment = figment::Figment::new().merge(("registry.basic_auth", bad));
        let error = Config::from_figment(figment)
            .expect_err("refused")
            .to_string();
        assert!(error.contains("registry.basic_auth"), "{error}");
        assert!(!error.contains(bad), "the secret is not shown: {error}");
    }
    let figment = figment::Figment::new().merge(("registry.basic_auth", CREDENTIALS));
    let config = Config::from_figment(figment).unwrap();
    assert_eq!(
        config.registry.credentials().unwrap(),
        Some(("marketflow", "s3cr:et"))
    );
    assert!(
        !format!("{config:?}").contains("s3cr"),
        "Debug hides the password"
    );
}
