#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../testdata/k8s_authz/", $name))
    };
}

fn reader() -> UserInfo {
    match parse_token_review(201, fixture!("tokenreview-authenticated.json")).unwrap() {
        Authn::Authenticated(u) => u,
        other @ Authn::Unauthenticated(_) => panic!("{other:?}"),
    }
}

#[test]
fn authenticated_token_review_gives_the_user_and_groups() {
    let u = reader();
    assert_eq!(
        u.username,
        "system:serviceaccount:monitoring:tcpwatch-reader"
    );
    assert_eq!(u.uid, "5f0c3b1e-8a7d-4c55-9f7e-2d1c0b6a9e41");
    assert_eq!(
        u.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:monitoring",
            "system:authenticated"
        ]
    );
    assert_eq!(
        u.extra["authentication.kubernetes.io/pod-name"],
        ["reader-7d9c8b6f5-x2k4q"]
    );
}

#[test]
fn unauthenticated_token_reviews_carry_the_error() {
    assert_eq!(
        parse_token_review(201, fixture!("tokenreview-unauthenticated.json")).unwrap(),
        Authn::Unauthenticated(
            "[invalid bearer token, square/go-jose: compact JWS format must have three parts]"
                .into()
        )
    );
    let Authn::Unauthenticated(e) =
        parse_token_review(201, fixture!("tokenreview-expired.json")).unwrap()
    else {
        panic!("expired token authenticated");
    };
    assert!(e.contains("expired"), "{e}");
}

#[test]
fn authenticated_without_a_user_name_is_not_authenticated() {
    let body = br#"{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","status":{"authenticated":true,"user":{}}}"#;
    assert!(matches!(
        parse_token_review(201, body).unwrap(),
        Authn::Unauthenticated(_)
    ));
}

#[test]
fn status_errors_are_api_errors_that_say_what_to_do() {
    let e = parse_token_review(403, fixture!("status-forbidden.json")).unwrap_err();
    assert!(e.0.contains("HTTP 403"), "{e}");
    assert!(
        e.0.contains("cannot create resource \"tokenreviews\""),
        "{e}"
    );
    assert!(e.0.contains("system:auth-delegator"), "{e}");
    let e = parse_subject_access_review(401, fixture!("status-unauthorized.json")).unwrap_err();
    assert!(
        e.0.starts_with("SubjectAccessReview: API server answered HTTP 401: Unauthorized"),
        "{e}"
    );
    let e = parse_token_review(429, fixture!("status-too-many-requests.json")).unwrap_err();
    assert!(
        e.0.contains("Too many requests") && e.0.contains("TooManyRequests"),
        "{e}"
    );
    // Not a Status object (a proxy's HTML page): the start of the body.
    let e = parse_token_review(502, b"<html>Bad Gateway</html>").unwrap_err();
    assert!(e.0.contains("<html>Bad Gateway"), "{e}");
}

#[test]
fn a_200_that_is_not_the_expected_kind_is_an_api_error() {
    // A Status with code 200 or a SubjectAccessReview where a TokenReview was expected.
    assert!(parse_token_review(201, fixture!("sar-allowed.json")).is_err());
    assert!(parse_subject_access_review(201, fixture!("tokenreview-authenticated.json")).is_err());
    assert!(parse_subject_access_review(201, b"not json").is_err());
    assert!(
        parse_token_review(
            201,
            br#"{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1"}"#
        )
        .is_err()
    );
}

#[test]
fn subject_access_reviews_allow_deny_and_give_reasons() {
    assert_eq!(
        parse_subject_access_review(201, fixture!("sar-allowed.json")).unwrap(),
        Authz::Allowed
    );
    assert_eq!(
        parse_subject_access_review(201, fixture!("sar-denied.json")).unwrap(),
        Authz::Denied(String::new())
    );
    assert_eq!(
        parse_subject_access_review(201, fixture!("sar-denied-explicit.json")).unwrap(),
        Authz::Denied(
            "denied by webhook authorizer: stream access needs an approved ticket".into()
        )
    );
    let Authz::Denied(r) =
        parse_subject_access_review(201, fixture!("sar-evaluation-error.json")).unwrap()
    else {
        panic!("evaluation error allowed");
    };
    assert!(r.contains("not found"), "{r}");
    // allowed and denied both set: denied wins.
    let body = br#"{"kind":"SubjectAccessReview","status":{"allowed":true,"denied":true}}"#;
    assert!(matches!(
        parse_subject_access_review(201, body).unwrap(),
        Authz::Denied(_)
    ));
}

#[test]
fn token_review_request_is_what_the_api_server_expects() {
    let v: serde_json::Value =
        serde_json::from_slice(&token_review_request("abc.def.ghi", &[])).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": "abc.def.ghi"}
        })
    );
    let v: serde_json::Value =
        serde_json::from_slice(&token_review_request("t", &["tcpwatch".into()])).unwrap();
    assert_eq!(v["spec"]["audiences"], serde_json::json!(["tcpwatch"]));
}

#[test]
fn subject_access_review_request_checks_the_path_and_verb_for_the_user_and_groups() {
    let u = reader();
    let attrs = Attributes::for_request("GET", "/api/v1/connections");
    let v: serde_json::Value =
        serde_json::from_slice(&subject_access_review_request(&u, &attrs)).unwrap();
    assert_eq!(v["apiVersion"], "authorization.k8s.io/v1");
    assert_eq!(v["kind"], "SubjectAccessReview");
    assert_eq!(
        v["spec"]["nonResourceAttributes"],
        serde_json::json!({"path": "/api/v1/connections", "verb": "get"})
    );
    assert_eq!(
        v["spec"]["user"],
        "system:serviceaccount:monitoring:tcpwatch-reader"
    );
    assert_eq!(v["spec"]["uid"], "5f0c3b1e-8a7d-4c55-9f7e-2d1c0b6a9e41");
    assert_eq!(v["spec"]["groups"][2], "system:authenticated");
    assert_eq!(
        v["spec"]["extra"]["authentication.kubernetes.io/node-name"],
        serde_json::json!(["worker-1"])
    );
    assert!(v["spec"].get("resourceAttributes").is_none());
}

#[test]
fn verbs_follow_the_api_server_names() {
    for (m, v) in [
        ("GET", "get"),
        ("HEAD", "get"),
        ("POST", "create"),
        ("PUT", "update"),
        ("PATCH", "patch"),
        ("DELETE", "delete"),
    ] {
        assert_eq!(Attributes::for_request(m, "/x").verb, v, "{m}");
    }
}

const S: u64 = 1_000_000_000;

#[test]
fn cache_keeps_allowed_30s_and_denied_10s_by_default() {
    let mut c = DecisionCache::new(&KubeAuthzConfig::default());
    let a = Attributes::for_request("GET", "/api/v1/connections");
    let ok = Decision::Allowed { user: "u".into() };
    let no = Decision::Forbidden {
        user: "v".into(),
        reason: String::new(),
    };
    let t0 = 100 * S;
    c.insert("good", &a, ok.clone(), t0);
    c.insert("bad", &a, no.clone(), t0);
    c.insert("junk", &a, Decision::Unauthenticated(String::new()), t0);
    assert_eq!(c.get("good", &a, t0 + 29 * S), Some(ok));
    assert_eq!(c.get("good", &a, t0 + 30 * S), None);
    assert_eq!(c.get("bad", &a, t0 + 9 * S), Some(no));
    assert_eq!(c.get("bad", &a, t0 + 10 * S), None);
    assert_eq!(c.get("junk", &a, t0 + 10 * S), None);
    // Another path or verb is another decision.
    assert_eq!(
        c.get(
            "good",
            &Attributes::for_request("GET", "/api/v1/stream"),
            t0
        ),
        None
    );
    assert_eq!(
        c.get(
            "good",
            &Attributes::for_request("POST", "/api/v1/connections"),
            t0
        ),
        None
    );
    assert_eq!(c.get("other", &a, t0), None);
}

#[test]
fn cache_is_bounded_and_zero_ttl_caches_nothing() {
    let mut c = DecisionCache::new(&KubeAuthzConfig::default());
    let a = Attributes::for_request("GET", "/api/v1/connections");
    for i in 0..(3 * CACHE_MAX as u64) {
        c.insert(
            &format!("t{i}"),
            &a,
            Decision::Allowed { user: "u".into() },
            i,
        );
        assert!(c.len() <= CACHE_MAX);
    }
    // The newest is kept.
    let last = format!("t{}", 3 * CACHE_MAX - 1);
    assert!(c.get(&last, &a, 3 * CACHE_MAX as u64).is_some());
    let mut z = DecisionCache::new(&KubeAuthzConfig {
        allowed_ttl_seconds: 0,
        denied_ttl_seconds: 0,
        audiences: vec![],
    });
    z.insert("t", &a, Decision::Allowed { user: "u".into() }, 0);
    assert!(z.is_empty());
}

#[test]
fn web_config_section_parses_validates_and_names_bad_keys() {
    use crate::webconfig::WebConfig;
    let c = WebConfig::from_toml_str("[kubernetes_authorization]\n").unwrap();
    assert_eq!(c.kubernetes_authorization, Some(KubeAuthzConfig::default()));
    assert!(c.requires_credentials());
    let c = WebConfig::from_toml_str(
        "[kubernetes_authorization]\nallowed_ttl_seconds = 5\ndenied_ttl_seconds = 1\naudiences = [\"tcpwatch\"]\n",
    )
    .unwrap();
    let k = c.kubernetes_authorization.unwrap();
    assert_eq!((k.allowed_ttl_seconds, k.denied_ttl_seconds), (5, 1));
    assert_eq!(k.audiences, ["tcpwatch"]);
    let e = WebConfig::from_toml_str("[kubernetes_authorization]\nresource = \"x\"\n").unwrap_err();
    assert_eq!(e.key, "kubernetes_authorization.resource");
    let e = WebConfig::from_toml_str("[kubernetes_authorization]\nallowed_ttl_seconds = \"30s\"\n")
        .unwrap_err();
    assert_eq!(e.key, "kubernetes_authorization.allowed_ttl_seconds");
    let e = WebConfig::from_toml_str("[kubernetes_authorization]\ndenied_ttl_seconds = 3600\n")
        .unwrap_err();
    assert_eq!(e.key, "kubernetes_authorization.denied_ttl_seconds");
    let e = WebConfig::from_toml_str("kubernetes_authorization = true\n").unwrap_err();
    assert_eq!(e.key, "kubernetes_authorization");
    assert!(!WebConfig::from_toml_str("").unwrap().requires_credentials());
}

#[test]
fn shipped_api_web_config_example_parses_and_turns_the_check_on() {
    let cm = include_str!("../../deploy/kubernetes/configmap.yaml");
    let mut block = String::new();
    for l in cm
        .lines()
        .skip_while(|l| l.trim() != "api-web.toml: |")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
    {
        block.push_str(l.get(4..).unwrap_or(""));
        block.push('\n');
    }
    assert!(
        !block.trim().is_empty(),
        "no api-web.toml in configmap.yaml"
    );
    let c = crate::webconfig::WebConfig::from_toml_str(&block).unwrap();
    assert_eq!(c.kubernetes_authorization, Some(KubeAuthzConfig::default()));
}
