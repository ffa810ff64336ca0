//! The access keys of `[alertmanager]`: TLS trust (`ca_file`) and credentials
//! (`basic_auth_user` + `basic_auth_password_file`, or `bearer_token_file`). Secrets live in
//! files, never in the configuration; the daemon reads them (and `ca_file`) and reports what is
//! missing or unreadable. See `docs/security.md`.
use crate::config::{AlertmanagerConfig, ConfigError};

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// A path key: unset, or a non-empty path.
fn path(key: &str, v: Option<&String>) -> Result<bool, ConfigError> {
    match v {
        None => Ok(false),
        Some(p) if p.trim().is_empty() => Err(invalid(
            key,
            "empty path (remove the key, or name a readable file)",
        )),
        Some(_) => Ok(true),
    }
}

/// Checks each access key on its own (run after every `--set`).
pub fn validate_keys(cfg: &AlertmanagerConfig) -> Result<(), ConfigError> {
    path("alertmanager.ca_file", cfg.ca_file.as_ref())?;
    path(
        "alertmanager.basic_auth_password_file",
        cfg.basic_auth_password_file.as_ref(),
    )?;
    path(
        "alertmanager.bearer_token_file",
        cfg.bearer_token_file.as_ref(),
    )?;
    if let Some(user) = &cfg.basic_auth_user
        && (user.is_empty() || user.contains(':'))
    {
        return Err(invalid(
            "alertmanager.basic_auth_user",
            format!("must be non-empty and without ':', got {user:?}"),
        ));
    }
    Ok(())
}

/// Checks the TLS and credential keys against each other and against `url`. Run on a whole
/// file and, by the daemon, once all `--set` overrides are applied (keys that go together can
/// then be given one `--set` at a time).
pub fn validate_access(cfg: &AlertmanagerConfig) -> Result<(), ConfigError> {
    validate_keys(cfg)?;
    let ca = cfg.ca_file.is_some();
    let password = cfg.basic_auth_password_file.is_some();
    let token = cfg.bearer_token_file.is_some();
    if ca
        && let Some(url) = &cfg.url
        && !url.starts_with("https://")
    {
        return Err(invalid(
            "alertmanager.ca_file",
            format!(
                "set, but alertmanager.url {url:?} is not https:// (use https://, or remove \
                 ca_file)"
            ),
        ));
    }
    match (&cfg.basic_auth_user, password) {
        (Some(_), true) | (None, false) => {}
        (Some(_), false) => {
            return Err(invalid(
                "alertmanager.basic_auth_password_file",
                "unset, but alertmanager.basic_auth_user is set (basic auth needs both)",
            ));
        }
        (None, true) => {
            return Err(invalid(
                "alertmanager.basic_auth_user",
                "unset, but alertmanager.basic_auth_password_file is set (basic auth needs both)",
            ));
        }
    }
    if token && password {
        return Err(invalid(
            "alertmanager.bearer_token_file",
            "set together with basic auth: use one of the two",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::validate_access;
    use crate::config::Config;

    fn err(text: &str) -> String {
        let e = Config::from_toml_str(text).unwrap_err();
        format!("{} | {e}", e.key().unwrap_or("-"))
    }

    #[test]
    fn access_keys_parse() {
        let c = Config::from_toml_str(
            "[alertmanager]\nurl = \"https://am:9093\"\nca_file = \"/etc/am/ca.pem\"\n\
             basic_auth_user = \"tcpwatch\"\nbasic_auth_password_file = \"/run/secrets/pw\"\n",
        )
        .unwrap();
        let am = &c.alertmanager;
        assert_eq!(am.ca_file.as_deref(), Some("/etc/am/ca.pem"));
        assert_eq!(am.basic_auth_user.as_deref(), Some("tcpwatch"));
        assert_eq!(
            am.basic_auth_password_file.as_deref(),
            Some("/run/secrets/pw")
        );
        let c = Config::from_toml_str(
            "[alertmanager]\nurl = \"http://am:9093\"\nbearer_token_file = \"/run/t\"\n",
        )
        .unwrap();
        assert_eq!(c.alertmanager.bearer_token_file.as_deref(), Some("/run/t"));
        let mut c = Config::default();
        c.apply_override("alertmanager.ca_file", "\"/ca.pem\"")
            .unwrap();
        assert_eq!(c.alertmanager.ca_file.as_deref(), Some("/ca.pem"));
        // Keys that go together are given one override at a time; the pair is checked once
        // all are applied.
        c.apply_override("alertmanager.basic_auth_user", "\"u\"")
            .unwrap();
        assert!(validate_access(&c.alertmanager).is_err());
        c.apply_override("alertmanager.basic_auth_password_file", "\"/pw\"")
            .unwrap();
        c.apply_override("alertmanager.url", "\"https://am\"")
            .unwrap();
        validate_access(&c.alertmanager).unwrap();
        let e = c
            .apply_override("alertmanager.basic_auth_user", "\"a:b\"")
            .unwrap_err();
        assert_eq!(e.key(), Some("alertmanager.basic_auth_user"));
    }

    #[test]
    fn access_keys_are_checked_together() {
        let e = err("[alertmanager]\nurl = \"http://am\"\nca_file = \"/ca.pem\"\n");
        assert!(e.starts_with("alertmanager.ca_file | "), "{e}");
        assert!(e.contains("not https://"), "{e}");
        let e = err("[alertmanager]\nca_file = \"\"\n");
        assert!(e.starts_with("alertmanager.ca_file | "), "{e}");
        let e = err("[alertmanager]\nbasic_auth_user = \"u\"\n");
        assert!(
            e.starts_with("alertmanager.basic_auth_password_file | "),
            "{e}"
        );
        let e = err("[alertmanager]\nbasic_auth_password_file = \"/pw\"\n");
        assert!(e.starts_with("alertmanager.basic_auth_user | "), "{e}");
        let e =
            err("[alertmanager]\nbasic_auth_user = \"a:b\"\nbasic_auth_password_file = \"/pw\"\n");
        assert!(e.starts_with("alertmanager.basic_auth_user | "), "{e}");
        let e = err(
            "[alertmanager]\nbasic_auth_user = \"u\"\nbasic_auth_password_file = \"/pw\"\n\
             bearer_token_file = \"/t\"\n",
        );
        assert!(e.starts_with("alertmanager.bearer_token_file | "), "{e}");
        let e = err("[alertmanager]\nbearer_token_file = \" \"\n");
        assert!(e.starts_with("alertmanager.bearer_token_file | "), "{e}");
    }
}
