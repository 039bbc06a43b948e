//! Endpoints of outbound HTTP: `http(s)://host[:port]` split from a URL, and a URL fit to
//! print ([`redact`]: no credentials, query or fragment, which may carry a token). Shared by
//! the clients (`client::url` builds job routes on it) and the JWKS fetch.

use std::fmt;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Where the gateway listens: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// The `Host` header value.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}", self.authority())
    }
}

/// A URL that cannot be used; says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadUrl(pub(crate) String);

pub(crate) fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// `url` fit to print: no query or fragment (they may carry a token), no credentials, at
/// most 200 characters.
pub fn redact(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let (before, after) = url.split_at(end);
    let (scheme, rest) = before.split_once("://").unwrap_or(("", before));
    let rest = match rest.split_once('/') {
        Some((authority, path)) => {
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{host}/{path}")
        }
        None => rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_string(),
    };
    let mut out = if scheme.is_empty() {
        cut(&rest, 200)
    } else {
        cut(&format!("{scheme}://{rest}"), 200)
    };
    if !after.is_empty() {
        out.push_str(if after.starts_with('?') {
            "?..."
        } else {
            "#..."
        });
    }
    format!("{out:?}")
}

/// Splits `scheme://authority/path?query#fragment`.
/// Any `http(s)://` URL as its endpoint and its path with query (for fetching a document
/// such as a JWKS).
pub fn split(url: &str) -> Result<(Endpoint, String), BadUrl> {
    let (endpoint, path, query) = split_url(url)?;
    let path = if path.is_empty() { "/" } else { path };
    Ok(match query {
        Some(q) => (endpoint, format!("{path}?{q}")),
        None => (endpoint, path.to_string()),
    })
}

pub(crate) fn split_url(url: &str) -> Result<(Endpoint, &str, Option<&str>), BadUrl> {
    let shown = redact(url);
    let (scheme, rest) = if let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
    {
        (Scheme::Http, rest)
    } else if let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("wss://"))
    {
        (Scheme::Https, rest)
    } else {
        return Err(BadUrl(format!(
            "{shown} must start with http:// or https://"
        )));
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if authority.contains('@') {
        return Err(BadUrl(format!(
            "{shown}: credentials in the URL are not supported; use --token"
        )));
    }
    let default_port = match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| BadUrl(format!("{shown}: unclosed [ in the host")))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(BadUrl(format!("{shown} has no host")));
    }
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p
            .parse()
            .map_err(|_| BadUrl(format!("{shown}: port {:?} is not a number", cut(p, 20))))?,
    };
    Ok((
        Endpoint {
            scheme,
            host: host.to_string(),
            port,
        },
        path,
        query,
    ))
}
