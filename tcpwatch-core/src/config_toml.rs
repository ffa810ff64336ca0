//! TOML plumbing of the configuration: the unknown-key check against the schema, dotted-key
//! overrides, and syntax errors with line and column.
use super::{Config, ConfigError};

/// Every key with a value (options filled) so that the serialized table lists all keys.
pub(super) fn schema_sample() -> toml::Table {
    let mut cfg = Config::default();
    cfg.alertmanager.url = Some(String::new());
    cfg.alertmanager.ca_file = Some(String::new());
    cfg.alertmanager.basic_auth_user = Some(String::new());
    cfg.alertmanager.basic_auth_password_file = Some(String::new());
    cfg.alertmanager.bearer_token_file = Some(String::new());
    toml::Table::try_from(&cfg).unwrap_or_default()
}

pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Rejects keys that are not in the schema, naming the first one by its dotted path.
pub(super) fn check_known_keys(
    user: &toml::Table,
    schema: &toml::Table,
    prefix: &str,
) -> Result<(), ConfigError> {
    for (k, v) in user {
        let path = join(prefix, k);
        match schema.get(k) {
            None => {
                let known = schema
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ConfigError::UnknownKey { key: path, known });
            }
            Some(toml::Value::Table(sub)) => match v {
                toml::Value::Table(user_sub) => check_known_keys(user_sub, sub, &path)?,
                other => {
                    return Err(ConfigError::invalid(
                        &path,
                        format!("expected a table, got {}", other.type_str()),
                    ));
                }
            },
            Some(scalar) => {
                if let toml::Value::Table(_) = v {
                    return Err(ConfigError::invalid(
                        &path,
                        format!("expected {}, got a table", scalar.type_str()),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Deserializes; on error finds the key at fault by applying the user's keys one at a time
/// to the defaults (the serde error of a whole document does not carry the key path).
pub(super) fn deserialize_table(table: &toml::Table) -> Result<Config, ConfigError> {
    let err = match toml::Value::Table(table.clone()).try_into::<Config>() {
        Ok(cfg) => return Ok(cfg),
        Err(e) => e,
    };
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut leaves = Vec::new();
    collect_leaves(table, "", &mut leaves);
    for (path, value) in leaves {
        let mut probe = defaults.clone();
        let parts: Vec<&str> = path.split('.').collect();
        set_path(&mut probe, &parts, value, &path)?;
        if let Err(e) = toml::Value::Table(probe).try_into::<Config>() {
            return Err(ConfigError::invalid(&path, one_line(e.message())));
        }
    }
    Err(ConfigError::invalid("config", one_line(err.message())))
}

pub(super) fn collect_leaves(
    table: &toml::Table,
    prefix: &str,
    out: &mut Vec<(String, toml::Value)>,
) {
    for (k, v) in table {
        let path = join(prefix, k);
        match v {
            toml::Value::Table(sub) => collect_leaves(sub, &path, out),
            other => out.push((path, other.clone())),
        }
    }
}

pub(super) fn set_path(
    table: &mut toml::Table,
    path: &[&str],
    value: toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    let Some((last, parents)) = path.split_last() else {
        return Err(ConfigError::invalid(key, "empty key"));
    };
    let mut cur = table;
    for (i, p) in parents.iter().enumerate() {
        let entry = cur
            .entry((*p).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            other => {
                return Err(ConfigError::invalid(
                    &path[..=i].join("."),
                    format!("is a {}, not a table", other.type_str()),
                ));
            }
        };
    }
    cur.insert((*last).to_owned(), value);
    Ok(())
}

pub(super) fn parse_override_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) if t.len() == 1 => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        _ => toml::Value::String(raw.to_owned()),
    }
}

pub(super) fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e
        .span()
        .map_or((0, 0), |span| line_column(text, span.start));
    let message = one_line(e.message());
    ConfigError::Syntax {
        line,
        column,
        message,
    }
}

/// A multi-line parser message on one line.
pub(super) fn one_line(message: &str) -> String {
    let parts: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    parts.join("; ")
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}
