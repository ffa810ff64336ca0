//! Unit tests of `webconfig`.
use super::*;

fn err_key(text: &str) -> String {
    WebConfig::from_toml_str(text).unwrap_err().key
}

#[test]
fn empty_is_plain_http_without_auth() {
    let c = WebConfig::from_toml_str("").unwrap();
    assert_eq!(c, WebConfig::default());
    assert!(!c.requires_credentials());
    assert!(c.files().is_empty());
}

#[test]
fn full_config_parses() {
    let hash = bcrypt::hash("secret", 4).unwrap();
    let text = format!(
        "bearer_token_files = [\"/t\"]\n[tls_server_config]\ncert_file = \"/c\"\nkey_file = \"/k\"\n\
         client_auth_type = \"RequireAndVerifyClientCert\"\nclient_ca_file = \"/ca\"\n\
         [basic_auth_users]\nprom = \"{hash}\"\n"
    );
    let c = WebConfig::from_toml_str(&text).unwrap();
    let tls = c.tls_server_config.as_ref().unwrap();
    assert_eq!(tls.client_auth_type, ClientAuth::RequireAndVerifyClientCert);
    assert!(c.requires_credentials());
    let keys: Vec<_> = c.files().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "tls_server_config.cert_file",
            "tls_server_config.key_file",
            "tls_server_config.client_ca_file",
            "bearer_token_files[0]"
        ]
    );
    assert!(verify_password("secret", &c.basic_auth_users["prom"]));
    assert!(!verify_password("wrong", &c.basic_auth_users["prom"]));
}

#[test]
fn bad_keys_and_values_are_named() {
    assert_eq!(err_key("tls_config = 1\n"), "tls_config");
    assert_eq!(
        err_key("[tls_server_config]\ncert_file=\"/c\"\nkey_file=\"/k\"\ncert = 1\n"),
        "tls_server_config.cert"
    );
    assert_eq!(
        err_key(
            "[tls_server_config]\ncert_file=\"/c\"\nkey_file=\"/k\"\nclient_auth_type = \"RequireAnyClientCert\"\n"
        ),
        "tls_server_config.client_auth_type"
    );
    assert_eq!(
        err_key("[tls_server_config]\ncert_file=\"/c\"\nkey_file=\"\"\n"),
        "tls_server_config.key_file"
    );
    assert_eq!(
        err_key("[tls_server_config]\ncert_file=\"/c\"\nkey_file=\"/k\"\nclient_ca_file=\"/ca\"\n"),
        "tls_server_config.client_ca_file"
    );
    assert_eq!(
        err_key(
            "[tls_server_config]\ncert_file=\"/c\"\nkey_file=\"/k\"\nclient_auth_type=\"VerifyClientCertIfGiven\"\n"
        ),
        "tls_server_config.client_ca_file"
    );
    assert_eq!(
        err_key("[basic_auth_users]\nprom = \"plaintext\"\n"),
        "basic_auth_users.prom"
    );
    assert_eq!(
        err_key("bearer_token_files = [\"\"]\n"),
        "bearer_token_files[0]"
    );
    assert_eq!(err_key("bearer_token_files = 3\n"), "bearer_token_files");
    assert_eq!(err_key("bearer_token_files = [\n"), "web config");
}

#[test]
fn authorization_headers() {
    assert_eq!(Credentials::parse(None), Credentials::None);
    // "prom:pa:ss" (a password may hold ':').
    assert_eq!(
        Credentials::parse(Some(b"Basic cHJvbTpwYTpzcw==")),
        Credentials::Basic {
            user: "prom".into(),
            password: "pa:ss".into()
        }
    );
    assert_eq!(
        Credentials::parse(Some(b"bearer abc")),
        Credentials::Bearer("abc".into())
    );
    for bad in [
        &b"Basic !!!"[..],
        b"Basic cHJvbQ==",
        b"Digest x",
        b"Bearer ",
        b"\xff",
    ] {
        assert_eq!(Credentials::parse(Some(bad)), Credentials::Malformed);
    }
    let dbg = format!(
        "{:?}",
        Credentials::Basic {
            user: "u".into(),
            password: "hunter2".into()
        }
    );
    assert!(!dbg.contains("hunter2"));
}

#[test]
fn tokens_and_dummy_hash() {
    let t = vec!["abc".to_owned(), "defg".to_owned()];
    assert!(token_matches(&t, "defg"));
    assert!(!token_matches(&t, "def"));
    assert!(!token_matches(&t, ""));
    assert!(!token_matches(&[String::new()], ""));
    assert!(DUMMY_HASH.parse::<bcrypt::HashParts>().is_ok());
    assert!(!verify_password("", DUMMY_HASH));
}
