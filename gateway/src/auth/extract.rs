//! Where a request's token comes from: `Authorization: Bearer`, then `x-capgo-log-token`,
//! then the `token` query parameter (browsers' EventSource cannot set headers).

use std::borrow::Cow;

use http::header::AUTHORIZATION;
use http::HeaderMap;

/// The header Capgo clients send their log token in.
pub const CAPGO_TOKEN_HEADER: &str = "x-capgo-log-token";

/// The query parameter for clients that cannot set headers.
pub const TOKEN_QUERY_PARAM: &str = "token";

/// The request's token from the first source that has a non-empty one, or `None`
/// (answer [`AuthError::Missing`](super::AuthError::Missing)).
///
/// A present but empty source counts as absent, so the next source is tried.
pub fn token_from_request<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Option<Cow<'a, str>> {
    bearer(headers)
        .or_else(|| header_token(headers))
        .map(Cow::Borrowed)
        .or_else(|| query.and_then(query_token))
}

/// The credentials of every `Authorization: Bearer` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(AUTHORIZATION).iter().find_map(|value| {
        let value = value.to_str().ok()?.trim();
        let (scheme, credentials) = value.split_once(' ')?;
        let credentials = credentials.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
    })
}

fn header_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(CAPGO_TOKEN_HEADER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .find(|token| !token.is_empty())
}

fn query_token(query: &str) -> Option<Cow<'_, str>> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, value)| name == TOKEN_QUERY_PARAM && !value.trim().is_empty())
        .map(|(_, value)| match value {
            Cow::Borrowed(v) => Cow::Borrowed(v.trim()),
            Cow::Owned(v) => Cow::Owned(v.trim().to_owned()),
        })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn token(pairs: &[(&'static str, &'static str)], query: Option<&str>) -> Option<String> {
        token_from_request(&headers(pairs), query).map(Cow::into_owned)
    }

    #[test]
    fn order_is_bearer_then_capgo_header_then_query() {
        let all = [
            ("authorization", "Bearer a.b.c"),
            (CAPGO_TOKEN_HEADER, "d.e.f"),
        ];
        assert_eq!(token(&all, Some("token=g.h.i")).as_deref(), Some("a.b.c"));
        assert_eq!(
            token(&all[1..], Some("token=g.h.i")).as_deref(),
            Some("d.e.f")
        );
        assert_eq!(
            token(&[], Some("x=1&token=g.h.i")).as_deref(),
            Some("g.h.i")
        );
        assert_eq!(token(&[], Some("x=1")), None);
        assert_eq!(token(&[], None), None);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_others_are_skipped() {
        for value in ["bearer t", "BEARER t", "Bearer   t  "] {
            let map = headers(&[("authorization", value)]);
            assert_eq!(
                token_from_request(&map, None).as_deref(),
                Some("t"),
                "{value}"
            );
        }
        let basic = [("authorization", "Basic dTpw"), (CAPGO_TOKEN_HEADER, "c")];
        assert_eq!(token(&basic, None).as_deref(), Some("c"));
        let basic_then_bearer = [
            ("authorization", "Basic dTpw"),
            ("authorization", "Bearer b"),
        ];
        assert_eq!(token(&basic_then_bearer, None).as_deref(), Some("b"));
        assert_eq!(token(&[("authorization", "Bearertoken")], None), None);
    }

    #[test]
    fn empty_values_count_as_absent() {
        let empty = [("authorization", "Bearer "), (CAPGO_TOKEN_HEADER, "")];
        assert_eq!(token(&empty, Some("token=&token=q")).as_deref(), Some("q"));
        assert_eq!(token(&empty, Some("token=")), None);
        assert_eq!(token(&[("authorization", "Bearer")], None), None);
    }

    #[test]
    fn query_value_is_percent_decoded() {
        assert_eq!(
            token(&[], Some("token=a%2Eb.c%2Bd&last_event_id=4")).as_deref(),
            Some("a.b.c+d")
        );
        assert_eq!(token(&[], Some("token=a+b")).as_deref(), Some("a b"));
        assert_eq!(token(&[], Some("tok%65n=x")).as_deref(), Some("x"));
    }
}
