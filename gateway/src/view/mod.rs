//! The live log page: `GET /v1/jobs/{job}/view` and `{capgo-prefix}/{job}/view`, with its
//! stylesheet and script modules beside it (`view/page.css`; `view/page.js`, which imports
//! the others of [`MODULES`]), embedded at build time.
//! The page holds no job data, so it is served without a token: the token travels in the
//! URL fragment, which browsers never send, and the page moves it into its stream requests.

use bytes::Bytes;
use http::{header, HeaderValue, Response};

use crate::body::{full, Body};
use crate::job_id::JobId;

const PAGE_HTML: &str = include_str!("page.html");
const PAGE_CSS: &str = include_str!("page.css");
const PAGE_JS: &str = include_str!("page.js");

/// The script modules `page.js` imports, by file name: one concern each (ANSI, the log
/// model, drawing, the stream).
const MODULES: [(&str, &str); 4] = [
    ("ansi.js", include_str!("ansi.js")),
    ("model.js", include_str!("model.js")),
    ("render.js", include_str!("render.js")),
    ("stream.js", include_str!("stream.js")),
];

/// Everything the page loads comes from the gateway; nothing inline, nothing from elsewhere.
/// Styles set through the CSSOM (truecolor spans) are not inline styles and stay allowed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// One of the page's files, named by the path after the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asset {
    /// `.../view`
    Page,
    /// `.../view/page.css`
    Style,
    /// `.../view/page.js`: the controls and the start.
    Script,
    /// `.../view/{name}`: one of the [`MODULES`] `page.js` imports, by its index there.
    Module(usize),
}

impl Asset {
    /// The asset named by what follows `{job}/` in the path.
    pub(crate) fn parse(rest: &str) -> Option<Self> {
        match rest {
            "view" => Some(Self::Page),
            "view/page.css" => Some(Self::Style),
            "view/page.js" => Some(Self::Script),
            _ => {
                let name = rest.strip_prefix("view/")?;
                MODULES
                    .iter()
                    .position(|(n, _)| *n == name)
                    .map(Self::Module)
            }
        }
    }
}

/// Where the page finds the job's routes, relative to the page's own URL, so the page
/// works unchanged behind a proxy that mounts the gateway under another path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Links {
    /// The SSE stream.
    stream: String,
    /// The plain-text log, for the download link.
    raw: String,
    /// The JSON status, asked when the stream fails for good (expired token, say).
    status: String,
}

impl Links {
    /// The links of `/v1/jobs/{job}/view`.
    pub(crate) fn canonical(job: &JobId) -> Self {
        Self {
            stream: "logs".into(),
            raw: "log".into(),
            status: format!("../{job}"),
        }
    }

    /// The links of `{prefix}/{job}/view`: the stream under the prefix, the rest at `/v1`.
    pub(crate) fn capgo(job: &JobId) -> Self {
        Self {
            stream: format!("../{job}"),
            raw: format!("/v1/jobs/{job}/log"),
            status: format!("/v1/jobs/{job}"),
        }
    }
}

/// The response for `asset`; `links` fill the page's `data-*` attributes. A job id holds
/// only `[A-Za-z0-9._-]`, so the links need no HTML escaping.
pub(crate) fn serve(asset: Asset, links: &Links) -> Response<Body> {
    let (body, content_type) = match asset {
        Asset::Page => (
            Bytes::from(
                PAGE_HTML
                    .replace("{{stream}}", &links.stream)
                    .replace("{{raw}}", &links.raw)
                    .replace("{{status}}", &links.status),
            ),
            "text/html; charset=utf-8",
        ),
        Asset::Style => (
            Bytes::from_static(PAGE_CSS.as_bytes()),
            "text/css; charset=utf-8",
        ),
        Asset::Script => (
            Bytes::from_static(PAGE_JS.as_bytes()),
            "text/javascript; charset=utf-8",
        ),
        Asset::Module(i) => (
            Bytes::from_static(MODULES.get(i).map_or("", |(_, js)| js).as_bytes()),
            "text/javascript; charset=utf-8",
        ),
    };
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_by_path() {
        assert_eq!(Asset::parse("view"), Some(Asset::Page));
        assert_eq!(Asset::parse("view/page.js"), Some(Asset::Script));
        assert_eq!(Asset::parse("view/page.css"), Some(Asset::Style));
        assert_eq!(Asset::parse("view/ansi.js"), Some(Asset::Module(0)));
        assert_eq!(Asset::parse("view/stream.js"), Some(Asset::Module(3)));
        assert_eq!(Asset::parse("view/view/ansi.js"), None);
        for (i, (name, js)) in MODULES.iter().enumerate() {
            let resp = serve(
                Asset::Module(i),
                &Links::canonical(&JobId::parse("j").unwrap()),
            );
            assert_eq!(
                resp.headers()[header::CONTENT_TYPE],
                "text/javascript; charset=utf-8"
            );
            assert!(js.len() > 1000, "{name}");
            // Every module page.js imports is served.
            assert!(PAGE_JS.contains(&format!("'./{name}'")), "{name}");
        }
        assert_eq!(Asset::parse("view/"), None);
        assert_eq!(Asset::parse("view/other.js"), None);
    }

    #[test]
    fn page_names_its_routes_and_no_placeholder_is_left() {
        let job = JobId::parse("build-7").unwrap();
        let page = serve(Asset::Page, &Links::capgo(&job));
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        assert!(!PAGE_HTML
            .replace("{{stream}}", "")
            .replace("{{raw}}", "")
            .replace("{{status}}", "")
            .contains("{{"));
        assert!(PAGE_HTML.contains("data-stream=\"{{stream}}\""));
        assert_eq!(Links::capgo(&job).stream, "../build-7");
        assert_eq!(Links::canonical(&job).status, "../build-7");
    }
}
