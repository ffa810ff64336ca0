//! `[exposure]`: the exposure audit (`docs/exposure.md`).
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Longest threshold accepted (one week): beyond it only "never" would count.
pub const MAX_THRESHOLD_SECONDS: u64 = 7 * 24 * 3600;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExposureConfig {
    /// A connection whose worst-case wait for a vanished peer exceeds this many seconds is
    /// counted as exposed ("never" always is).
    pub threshold_seconds: u64,
}

impl Default for ExposureConfig {
    fn default() -> Self {
        Self {
            threshold_seconds: 300,
        }
    }
}

impl ExposureConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if (1..=MAX_THRESHOLD_SECONDS).contains(&self.threshold_seconds) {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                key: "exposure.threshold_seconds".to_owned(),
                message: format!(
                    "must be between 1 and {MAX_THRESHOLD_SECONDS} (a week), got {}",
                    self.threshold_seconds
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use crate::config::Config;

    #[test]
    fn default_and_validation() {
        let c = Config::default_embedded().unwrap();
        assert_eq!(c.exposure.threshold_seconds, 300);
        let mut c = Config::default();
        assert_eq!(c.exposure.threshold_seconds, 300);
        c.apply_override("exposure.threshold_seconds", "60")
            .unwrap();
        assert_eq!(c.exposure.threshold_seconds, 60);
        let e = c
            .apply_override("exposure.threshold_seconds", "0")
            .unwrap_err();
        assert_eq!(e.key(), Some("exposure.threshold_seconds"));
        assert!(
            c.apply_override("exposure.threshold_seconds", "-1")
                .is_err()
        );
        assert!(c.apply_override("exposure.nope", "1").is_err());
        assert_eq!(c.exposure.threshold_seconds, 60);
    }
}
