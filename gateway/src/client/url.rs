//! Gateway URLs as the clients see them: a base (`http(s)://host[:port][/prefix]`) and the
//! job routes under it, parsed from a `logs_url` (`/v1/jobs/J/logs`, the page `/v1/jobs/J/view`,
//! Capgo's `/build_logs_direct/J` and its `/stream`) or built from `--url BASE --job J`.
//! A token in a URL (`?token=`, `#token=`) is taken out and never shown: messages quote
//! [`redact`]ed URLs.

use crate::job_id::JobId;
use crate::net::url::{cut, split_url};
pub use crate::net::url::{redact, BadUrl, Endpoint, Scheme};

/// Which route family a stream URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `/v1/jobs/{job}/logs`: token as `Authorization: Bearer`.
    V1,
    /// Capgo's `/build_logs_direct/{job}`: token as the `token` query parameter.
    Capgo,
}

/// One job on one gateway: every route the clients use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUrl {
    pub endpoint: Endpoint,
    /// Path the gateway is mounted under (empty, or `/something` without a trailing `/`).
    pub prefix: String,
    pub job: String,
    pub flavor: Flavor,
    /// A `token` query parameter (or `#token=` fragment of the page URL) of the stream URL.
    pub url_token: Option<String>,
    /// A `last_event_id` (or `last_sequence`) query parameter: where to resume.
    pub url_last_event_id: Option<String>,
}

impl JobUrl {
    /// Parses a full stream URL: `.../v1/jobs/J/logs`, the page `.../v1/jobs/J/view#token=T`,
    /// or Capgo's `.../build_logs_direct/J` (and its WebSocket form `.../J/stream`, also as
    /// `ws(s)://`). The token and the resume point are taken from the query or fragment.
    pub fn from_logs_url(url: &str) -> Result<Self, BadUrl> {
        let (endpoint, path, query) = split_url(url)?;
        let fragment = url.split_once('#').map(|(_, f)| f);
        let param = |name: &str| {
            [query, fragment].into_iter().flatten().find_map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
            })
        };
        let url_token = param("token");
        let url_last_event_id = param("last_event_id").or_else(|| param("last_sequence"));
        let path = path.trim_end_matches('/');
        let expected = || {
            BadUrl(format!(
                "{} is not a stream URL: expected .../v1/jobs/JOB/logs, .../v1/jobs/JOB/view or \
                 .../build_logs_direct/JOB",
                redact(url)
            ))
        };
        let (prefix, job, flavor) = if let Some((prefix, rest)) = path.rsplit_once("/v1/jobs/") {
            let job = rest
                .strip_suffix("/logs")
                .or_else(|| rest.strip_suffix("/view"))
                .ok_or_else(expected)?;
            (prefix, job, Flavor::V1)
        } else if let Some((prefix, rest)) = path.rsplit_once("/build_logs_direct/") {
            let job = rest.strip_suffix("/stream").unwrap_or(rest);
            (prefix, job, Flavor::Capgo)
        } else {
            return Err(expected());
        };
        Ok(Self {
            endpoint,
            prefix: prefix.to_string(),
            job: check_job(job)?,
            flavor,
            url_token,
            url_last_event_id,
        })
    }

    /// A job under a base URL (`http://host:8080`, maybe with a path prefix).
    pub fn from_base(base: &str, job: &str) -> Result<Self, BadUrl> {
        let (endpoint, path, _) = split_url(base)?;
        Ok(Self {
            endpoint,
            prefix: path.trim_end_matches('/').to_string(),
            job: check_job(job)?,
            flavor: Flavor::V1,
            url_token: None,
            url_last_event_id: None,
        })
    }

    /// Path and query of the SSE stream; `token` goes in the query for Capgo URLs.
    pub fn stream_path(&self, token: Option<&str>, after: Option<u64>) -> String {
        match self.flavor {
            Flavor::V1 => format!("{}/v1/jobs/{}/logs", self.prefix, self.job),
            Flavor::Capgo => {
                let mut query = form_urlencoded::Serializer::new(String::new());
                if let Some(token) = token {
                    query.append_pair("token", token);
                }
                if let Some(after) = after {
                    query.append_pair("last_sequence", &after.to_string());
                }
                let query = query.finish();
                let path = format!("{}/build_logs_direct/{}", self.prefix, self.job);
                if query.is_empty() {
                    path
                } else {
                    format!("{path}?{query}")
                }
            }
        }
    }

    /// `GET` status / `?wait=` long poll.
    pub fn status_path(&self) -> String {
        format!("{}/v1/jobs/{}", self.prefix, self.job)
    }

    /// `POST` records.
    pub fn publish_path(&self) -> String {
        format!("{}/v1/jobs/{}/logs", self.prefix, self.job)
    }

    /// `POST` a status.
    pub fn set_status_path(&self) -> String {
        format!("{}/v1/jobs/{}/status", self.prefix, self.job)
    }

    /// Whether the token travels in the query rather than in `Authorization`.
    pub fn token_in_query(&self) -> bool {
        self.flavor == Flavor::Capgo
    }
}

fn check_job(raw: &str) -> Result<String, BadUrl> {
    JobId::parse(raw)
        .map(|j| j.as_str().to_string())
        .map_err(|e| BadUrl(format!("job {:?}: {e}", cut(raw, 130))))
}

/// At most `max` characters of `s`.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_stream_urls() {
        let u = JobUrl::from_logs_url("http://127.0.0.1:8080/v1/jobs/build-7/logs").unwrap();
        assert_eq!(u.endpoint.authority(), "127.0.0.1:8080");
        assert_eq!(u.job, "build-7");
        assert_eq!(u.flavor, Flavor::V1);
        assert_eq!(u.stream_path(Some("t"), Some(3)), "/v1/jobs/build-7/logs");
        assert_eq!(u.status_path(), "/v1/jobs/build-7");
        let u = JobUrl::from_logs_url("https://logs.example.com/gw/v1/jobs/a/logs/").unwrap();
        assert_eq!(u.endpoint.port, 443);
        assert_eq!(u.endpoint.to_string(), "https://logs.example.com");
        assert_eq!(u.prefix, "/gw");
        assert_eq!(u.publish_path(), "/gw/v1/jobs/a/logs");
    }

    #[test]
    fn capgo_urls_carry_the_token_in_the_query() {
        let u =
            JobUrl::from_logs_url("http://[::1]:9000/build_logs_direct/j1?token=a%2Bb").unwrap();
        assert_eq!(u.endpoint.host, "::1");
        assert_eq!(u.endpoint.authority(), "[::1]:9000");
        assert_eq!(u.flavor, Flavor::Capgo);
        assert_eq!(u.url_token.as_deref(), Some("a+b"));
        assert_eq!(
            u.stream_path(Some("a+b"), Some(12)),
            "/build_logs_direct/j1?token=a%2Bb&last_sequence=12"
        );
        assert_eq!(u.status_path(), "/v1/jobs/j1");
    }

    #[test]
    fn page_capgo_stream_and_token_urls_give_the_token_and_the_resume_point() {
        let u = JobUrl::from_logs_url("https://h/gw/v1/jobs/j7/view#token=eyJ.a.b").unwrap();
        assert_eq!((u.job.as_str(), u.flavor), ("j7", Flavor::V1));
        assert_eq!(u.url_token.as_deref(), Some("eyJ.a.b"));
        assert_eq!(u.stream_path(None, None), "/gw/v1/jobs/j7/logs");
        let u =
            JobUrl::from_logs_url("http://h:8/v1/jobs/j/logs?token=t1&last_event_id=5").unwrap();
        assert_eq!(u.url_token.as_deref(), Some("t1"));
        assert_eq!(u.url_last_event_id.as_deref(), Some("5"));
        let u = JobUrl::from_logs_url("wss://h/build_logs_direct/j/stream?token=t2").unwrap();
        assert_eq!(
            (u.endpoint.scheme, u.flavor),
            (Scheme::Https, Flavor::Capgo)
        );
        assert_eq!((u.job.as_str(), u.url_token.as_deref()), ("j", Some("t2")));
        let u = JobUrl::from_logs_url("http://h/build_logs_direct/j?last_sequence=9").unwrap();
        assert_eq!(u.url_last_event_id.as_deref(), Some("9"));
    }

    #[test]
    fn errors_never_show_a_token() {
        for url in [
            "http://h/v1/jobs/j/wrong?token=SECRET",
            "http://h/v1/jobs/j/other#token=SECRET",
            "ftp://h/v1/jobs/j/logs?token=SECRET",
            "http://u:SECRET@h/v1/jobs/j/logs",
        ] {
            let err = JobUrl::from_logs_url(url).unwrap_err().to_string();
            assert!(!err.contains("SECRET"), "{url}: {err}");
        }
        assert_eq!(
            redact("http://h/v1/jobs/j/view#token=x"),
            r#""http://h/v1/jobs/j/view#...""#
        );
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("ftp://x/v1/jobs/a/logs", "http://"),
            ("http:///v1/jobs/a/logs", "no host"),
            ("http://h:xx/v1/jobs/a/logs", "port"),
            ("http://u:p@h/v1/jobs/a/logs", "credentials"),
            ("http://h/v1/jobs/a", "expected"),
            ("http://h/v1/jobs/../logs", "job"),
            ("http://h/other", "expected"),
        ] {
            let err = JobUrl::from_logs_url(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
        assert!(JobUrl::from_base("http://h:1", "a/b").is_err());
        assert_eq!(
            JobUrl::from_base("http://h:1/", "a")
                .unwrap()
                .publish_path(),
            "/v1/jobs/a/logs"
        );
    }
}
