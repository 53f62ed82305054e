//! The web UI: static files compiled into the binary (no build step, nothing to install). The pages
//! talk to the API and the sockets; they hold no secrets (the session is an HttpOnly cookie). No
//! page has inline script, style or event handlers: the Content-Security-Policy (see [`crate::edge`])
//! allows only these files.

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

const INDEX: &str = include_str!("../static/index.html");
const LOGIN_JS: &str = include_str!("../static/login.js");
const AGENT: &str = include_str!("../static/agent.html");
const AGENT_JS: &str = include_str!("../static/agent.js");
const WALLBOARD: &str = include_str!("../static/wallboard.html");
const WALLBOARD_JS: &str = include_str!("../static/wallboard.js");
const STYLE: &str = include_str!("../static/style.css");
const I18N_JS: &str = include_str!("../static/i18n.js");
const SUPERVISOR_JS: &str = include_str!("../static/supervisor.js");
const SUPERVISOR_CSS: &str = include_str!("../static/supervisor.css");
const REPORTS: &str = include_str!("../static/reports.html");
const REPORTS_JS: &str = include_str!("../static/reports.js");
const SEARCH: &str = include_str!("../static/search.html");
const SEARCH_JS: &str = include_str!("../static/search.js");
const CUSTOMERS: &str = include_str!("../static/customers.html");
const CUSTOMERS_JS: &str = include_str!("../static/customers.js");
/// uPlot 1.6.32 (MIT, github.com/leeoniya/uPlot), the charts of the wallboard and the reports:
/// small, maintained, no build step. Its licence is beside it in `static/vendor/`.
const UPLOT_JS: &str = include_str!("../static/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../static/vendor/uPlot.min.css");

/// The language catalogs, one per page and language (`<catalog>.<lang>.json`). Every key a page
/// uses is in each language's file; `tests::every_key_in_every_language` holds that.
pub(crate) const CATALOGS: &[(&str, &str)] = &[
    ("login.en.json", include_str!("../static/i18n/login.en.json")),
    (
        "login.zh-CN.json",
        include_str!("../static/i18n/login.zh-CN.json"),
    ),
    (
        "wallboard.en.json",
        include_str!("../static/i18n/wallboard.en.json"),
    ),
    (
        "wallboard.zh-CN.json",
        include_str!("../static/i18n/wallboard.zh-CN.json"),
    ),
    (
        "supervisor.en.json",
        include_str!("../static/i18n/supervisor.en.json"),
    ),
    (
        "supervisor.zh-CN.json",
        include_str!("../static/i18n/supervisor.zh-CN.json"),
    ),
    ("agent.en.json", include_str!("../static/i18n/agent.en.json")),
    (
        "agent.zh-CN.json",
        include_str!("../static/i18n/agent.zh-CN.json"),
    ),
];

/// The pages and scripts whose strings come from a catalog: (catalog, markup or script text).
#[cfg(test)]
const TRANSLATED_SOURCES: &[(&str, &str)] = &[
    ("login", INDEX),
    ("login", LOGIN_JS),
    ("wallboard", WALLBOARD),
    ("wallboard", WALLBOARD_JS),
    ("wallboard", SUPERVISOR_JS),
    ("supervisor", SUPERVISOR_JS),
    ("supervisor", REPORTS),
    ("supervisor", REPORTS_JS),
    ("supervisor", SEARCH),
    ("supervisor", SEARCH_JS),
    ("supervisor", CUSTOMERS),
    ("supervisor", CUSTOMERS_JS),
    ("agent", AGENT),
    ("agent", AGENT_JS),
];

fn page(body: &'static str, content_type: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub(crate) fn routes() -> Router {
    const HTML: &str = "text/html; charset=utf-8";
    const JS: &str = "text/javascript; charset=utf-8";
    Router::new()
        .route("/", get(|| async { page(INDEX, HTML) }))
        .route("/login", get(|| async { Redirect::to("/") }))
        .route("/agent", get(|| async { page(AGENT, HTML) }))
        .route("/wallboard", get(|| async { page(WALLBOARD, HTML) }))
        .route("/static/login.js", get(|| async { page(LOGIN_JS, JS) }))
        .route("/static/agent.js", get(|| async { page(AGENT_JS, JS) }))
        .route("/static/wallboard.js", get(|| async { page(WALLBOARD_JS, JS) }))
        .route("/static/i18n.js", get(|| async { page(I18N_JS, JS) }))
        .route("/reports", get(|| async { page(REPORTS, HTML) }))
        .route("/search", get(|| async { page(SEARCH, HTML) }))
        .route("/customers", get(|| async { page(CUSTOMERS, HTML) }))
        .route("/static/supervisor.js", get(|| async { page(SUPERVISOR_JS, JS) }))
        .route("/static/reports.js", get(|| async { page(REPORTS_JS, JS) }))
        .route("/static/search.js", get(|| async { page(SEARCH_JS, JS) }))
        .route("/static/customers.js", get(|| async { page(CUSTOMERS_JS, JS) }))
        .route(
            "/static/vendor/uPlot.iife.min.js",
            get(|| async { page(UPLOT_JS, JS) }),
        )
        .route(
            "/static/vendor/uPlot.min.css",
            get(|| async { page(UPLOT_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/static/supervisor.css",
            get(|| async { page(SUPERVISOR_CSS, "text/css; charset=utf-8") }),
        )
        .route("/static/i18n/{file}", get(catalog))
        .route(
            "/static/style.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
}

async fn catalog(Path(file): Path<String>) -> axum::response::Response {
    match CATALOGS.iter().find(|(name, _)| *name == file) {
        Some((_, body)) => page(body, "application/json; charset=utf-8").into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    //! Every string a page shows goes through its catalog, in every language.
    use super::*;
    use std::collections::BTreeSet;

    const LANGUAGES: &[&str] = &["en", "zh-CN"];

    fn catalog_keys(catalog: &str, lang: &str) -> BTreeSet<String> {
        let name = format!("{catalog}.{lang}.json");
        let (_, body) = CATALOGS
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("catalog {name} is not served"));
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (key, value) in &map {
            let text = value.as_str().unwrap_or_default();
            assert!(!text.trim().is_empty(), "{name}: {key} is empty");
        }
        map.keys().cloned().collect()
    }

    /// Keys used by markup (`data-i18n…="key"`) and scripts (`I18n.t('key'`).
    fn used_keys(source: &str) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        for marker in [
            "data-i18n=\"",
            "data-i18n-placeholder=\"",
            "data-i18n-title=\"",
            "data-i18n-aria-label=\"",
            "I18n.t('",
            "t('",
        ] {
            let close = if marker.ends_with('\'') { '\'' } else { '"' };
            for (at, _) in source.match_indices(marker) {
                // `t('` is the translate call, not the end of `get('`.
                let glued = source[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                if marker == "t('" && glued {
                    continue;
                }
                let rest = &source[at + marker.len()..];
                if let Some(end) = rest.find(close) {
                    let key = &rest[..end];
                    if !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                    {
                        keys.insert(key.to_owned());
                    }
                }
            }
        }
        keys
    }

    #[test]
    fn every_key_in_every_language() {
        for lang in LANGUAGES {
            for (catalog, source) in TRANSLATED_SOURCES {
                let have = catalog_keys(catalog, lang);
                // A key built at run time (`I18n.t('state.' + name)`) reads as its prefix: the
                // catalog must hold at least one key of that family.
                let missing: Vec<_> = used_keys(source)
                    .into_iter()
                    .filter(|k| match k.strip_suffix('.') {
                        Some(_) => !have.iter().any(|h| h.starts_with(k.as_str())),
                        None => !have.contains(k),
                    })
                    .collect();
                assert!(missing.is_empty(), "{catalog}.{lang}.json lacks {missing:?}");
            }
        }
        // The languages hold the same keys, so no string falls back to its key in one of them.
        let mut catalogs: BTreeSet<&str> = BTreeSet::new();
        catalogs.extend(TRANSLATED_SOURCES.iter().map(|(c, _)| *c));
        for catalog in catalogs {
            assert_eq!(
                catalog_keys(catalog, "en"),
                catalog_keys(catalog, "zh-CN"),
                "{catalog}"
            );
        }
    }

    #[test]
    fn used_keys_finds_markup_and_script_keys() {
        let keys = used_keys(
            "<b data-i18n=\"a.b\"></b> I18n.t('c-d', {x}) get('next') <i data-i18n-title=\"e\"> p.get('no') t('f')",
        );
        assert_eq!(keys, ["a.b", "c-d", "e", "f"].map(String::from).into());
    }
}
