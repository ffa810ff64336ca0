//! Readers of Prometheus text (the daemon's `/metrics`).

/// The value of the sample `series` (a metric name, with its `{labels}` when it has any):
/// the first line that is `series`, white space, a number.
#[must_use]
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.starts_with(char::is_whitespace)
            .then(|| rest.trim().parse().ok())?
    })
}

/// The sum of every sample whose line starts with `prefix` (all label sets of a metric, and
/// of any metric whose name extends it), comments left out. 0 when there is none.
#[must_use]
pub fn sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_and_sums() {
        let m = "# HELP a b\ntcpwatch_table_connections 12\ntcpwatch_table_connections_x 3\n\
                 tcpwatch_sockets{state=\"LISTEN\"} 4\ntcpwatch_sockets{state=\"ESTAB\"} 6\n";
        assert_eq!(sample(m, "tcpwatch_table_connections"), Some(12.0));
        assert_eq!(sample(m, "tcpwatch_table_connections_x"), Some(3.0));
        assert_eq!(sample(m, "nope"), None);
        assert_eq!(sample(m, "tcpwatch_sockets{state=\"LISTEN\"}"), Some(4.0));
        assert!((sum(m, "tcpwatch_sockets") - 10.0).abs() < f64::EPSILON);
        assert!((sum(m, "tcpwatch_table_connections") - 15.0).abs() < f64::EPSILON);
        assert!(sum(m, "nope").abs() < f64::EPSILON);
    }
}
