//! One meaning per request path. The product behind Tollgate, not Tollgate, decides what a path
//! means: Flask, Starlette and aiohttp percent-decode before routing (`/%61pp` is `/app`), nginx
//! resolves `..` and merges `//`, Tomcat reads `;x` as a parameter, Rails strips `.json`. So the
//! edge (`http::edge`) turns every request target into one canonical path before any decision,
//! routes and gates on it, and forwards exactly it; what cannot be made unambiguous is refused.
//!
//! Canonical form (RFC 3986 §6.2.2): percent-encoded unreserved characters decoded, other escapes
//! in upper-case hex, `.` and `..` segments resolved (§5.2.4), repeated slashes merged. Refused:
//! an encoded `/` `\` `.` `%` or control character, a raw backslash or control character, raw
//! bytes outside ASCII, a `..` above the root, a broken escape. `GATEWAY_ALLOW_ENCODED_SLASH`
//! keeps `%2F` (forwarded as it came) and decides on the path with it decoded.
//!
//! Hand-written: the `url` crate normalises differently from every product above (it keeps `%2E`
//! escapes, and has no notion of refusing), and the rules here are the product of this module.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathRefusal {
    #[error("the request target is not a path")]
    NotAPath,
    #[error("an encoded {0} is not accepted in a path")]
    Encoded(&'static str),
    #[error("a backslash is not accepted in a path")]
    Backslash,
    #[error("control characters are not accepted in a path")]
    Control,
    #[error("characters outside ASCII must be percent-encoded")]
    NotAscii,
    #[error("a % in the path is not followed by two hex digits")]
    BrokenEscape,
    #[error("the path climbs above the root with ..")]
    AboveRoot,
    #[error("a . or .. segment with a parameter (..;) is not accepted")]
    DotWithParameter,
    #[error("path parameters (;) are not accepted on a gated path")]
    PathParameter,
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Whether `path` is canonical as it is: the common case, answered without allocating.
fn already_canonical(path: &str, allow_encoded_slash: bool) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    // Every byte plain or a canonical escape, and no empty, `.` or `..` segment.
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Only upper-case hex (lower case is made upper), of a byte that stays escaped.
                let upper_hex = |b: Option<&u8>| b.filter(|b| !b.is_ascii_lowercase()).copied().and_then(hex);
                match (upper_hex(bytes.get(i + 1)), upper_hex(bytes.get(i + 2))) {
                    (Some(high), Some(low)) if kept_escaped(high << 4 | low, allow_encoded_slash) => i += 3,
                    _ => return false,
                }
            }
            b'\\' | 0..=0x20 | 0x7f.. => return false,
            _ => i += 1,
        }
    }
    let dot_segment = |s: &str| {
        let rest = s.strip_prefix("..").or_else(|| s.strip_prefix('.'));
        rest.is_some_and(|rest| rest.is_empty() || rest.starts_with(';') || rest.starts_with("%3B"))
    };
    !path.contains("//") && !path.split('/').skip(1).any(dot_segment)
}

/// Whether an escaped byte stays escaped in the canonical form (rather than decoded or refused).
fn kept_escaped(byte: u8, allow_encoded_slash: bool) -> bool {
    match byte {
        b'/' => allow_encoded_slash,
        b'.' | b'\\' | b'%' | 0..=0x1f | 0x7f => false,
        other => !is_unreserved(other),
    }
}

/// The canonical form of a path (no query), or why it has none.
pub(crate) fn canonical_path(path: &str, allow_encoded_slash: bool) -> Result<Cow<'_, str>, PathRefusal> {
    if already_canonical(path, allow_encoded_slash) {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathRefusal::NotAPath);
    }
    let mut segments: Vec<String> = Vec::new();
    let raw_segments: Vec<&str> = path[1..].split('/').collect();
    let mut trailing_slash = false;
    for (i, raw) in raw_segments.iter().enumerate() {
        let last = i + 1 == raw_segments.len();
        let segment = canonical_segment(raw, allow_encoded_slash)?;
        // Tomcat and Spring read `..;x` as `..`: such a segment has no one meaning.
        let before_parameter: Vec<u8> = decoded(&segment).take_while(|b| *b != b';').collect();
        if before_parameter.len() < segment.len() && (before_parameter == b"." || before_parameter == b"..") {
            return Err(PathRefusal::DotWithParameter);
        }
        match segment.as_str() {
            "" | "." => trailing_slash = last,
            ".." => {
                segments.pop().ok_or(PathRefusal::AboveRoot)?;
                trailing_slash = last;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut canonical = String::with_capacity(path.len());
    for segment in &segments {
        canonical.push('/');
        canonical.push_str(segment);
    }
    if canonical.is_empty() || trailing_slash {
        canonical.push('/');
    }
    Ok(Cow::Owned(canonical))
}

/// One segment with its escapes made canonical.
fn canonical_segment(raw: &str, allow_encoded_slash: bool) -> Result<String, PathRefusal> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            b'%' => {
                let decoded = match (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
                    (Some(high), Some(low)) => high << 4 | low,
                    _ => return Err(PathRefusal::BrokenEscape),
                };
                match decoded {
                    b'.' => return Err(PathRefusal::Encoded("dot (%2E)")),
                    b'/' if allow_encoded_slash => out.push_str("%2F"),
                    b'/' => return Err(PathRefusal::Encoded("slash (%2F)")),
                    b'\\' => return Err(PathRefusal::Encoded("backslash (%5C)")),
                    b'%' => return Err(PathRefusal::Encoded("percent sign (%25)")),
                    0..=0x1f | 0x7f => return Err(PathRefusal::Encoded("control character")),
                    unreserved if is_unreserved(unreserved) => out.push(unreserved as char),
                    other => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        out.push('%');
                        out.push(HEX[(other >> 4) as usize] as char);
                        out.push(HEX[(other & 15) as usize] as char);
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathRefusal::Backslash),
            0..=0x20 | 0x7f => return Err(PathRefusal::Control),
            0x80.. => return Err(PathRefusal::NotAscii),
            plain => {
                out.push(plain as char);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The bytes of a canonical segment with every escape decoded (what a product that decodes sees).
fn decoded(segment: &str) -> impl Iterator<Item = u8> + '_ {
    let bytes = segment.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        let byte = *bytes.get(i)?;
        if byte == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                i += 3;
                return Some(high << 4 | low);
            }
        }
        i += 1;
        Some(byte)
    })
}

/// What a path needs of whoever asks for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Requirement<'a> {
    Nothing,
    /// An entitled user.
    Entitled,
    /// An entitled user whose plan has this feature (`PLAN_FEATURES`).
    Feature(&'a str),
}

/// A configured path prefix, as segments (lower-case when matching ignores case).
#[derive(Debug, Clone, PartialEq)]
enum Prefix {
    /// `/` in `GATED_PATHS`: everything.
    Everything,
    /// `/` in `OPEN_PATHS`: the root page only.
    Root,
    Segments(Vec<String>),
}

/// Which paths need an entitled user: `GATED_PATHS` minus `OPEN_PATHS`, the longer match winning
/// (a tie is gated). A gated prefix also matches a segment that a framework could map onto it
/// (`/app.json`, `/app;x`, `/app%20`): whatever follows the prefix's text in that segment must
/// continue a name (letters, digits, `-`, `_`, `~`) for the segment to be another one (`/apple`).
/// Open prefixes match whole segments only.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GatePaths {
    /// Each gated prefix, with the feature it needs if it names one (`API_PATHS` among them).
    gated: Vec<(Prefix, Option<String>)>,
    open: Vec<Prefix>,
    /// `API_PATHS`: where an API key identifies the caller.
    api: Vec<Prefix>,
    case_insensitive: bool,
    /// `GATEWAY_ALLOW_ENCODED_SLASH`: `%2F` stays in the canonical path; decisions decode it.
    pub(crate) allow_encoded_slash: bool,
    /// `FORWARD_AUTH_TRUST_URI`: forward-auth decides on the path its proxy names.
    pub(crate) trust_forwarded_uri: bool,
}

impl GatePaths {
    /// The prefixes of `settings` are already checked to be plain canonical paths (`config`).
    pub(crate) fn new(settings: &tollgate_core::config::GateSettings) -> GatePaths {
        let case_insensitive = settings.case_insensitive;
        let prefix = |text: &String, root: Prefix| {
            let text = if case_insensitive { text.to_ascii_lowercase() } else { text.clone() };
            match text.trim_matches('/') {
                "" => root,
                inner => Prefix::Segments(inner.split('/').map(str::to_string).collect()),
            }
        };
        GatePaths {
            gated: settings
                .gated_paths
                .iter()
                .map(|p| {
                    let feature = settings.feature_paths.iter().find(|(prefix, _)| prefix == p).map(|(_, f)| f.clone());
                    (prefix(p, Prefix::Everything), feature)
                })
                .chain(settings.api_paths.iter().map(|p| (prefix(p, Prefix::Everything), None)))
                .collect(),
            open: settings.open_paths.iter().map(|p| prefix(p, Prefix::Root)).collect(),
            api: settings.api_paths.iter().map(|p| prefix(p, Prefix::Everything)).collect(),
            case_insensitive,
            allow_encoded_slash: settings.allow_encoded_slash,
            trust_forwarded_uri: settings.trust_forwarded_uri,
        }
    }

    /// Whether the canonical `path` is under `API_PATHS` (whole segments).
    pub(crate) fn is_api(&self, path: &str) -> bool {
        let segments = path.split('/').filter(|s| !s.is_empty());
        self.api.iter().any(|p| self.matches(p, segments.clone(), false).is_some())
    }

    /// The canonical form of a request path under these rules.
    pub(crate) fn canonical<'p>(&self, path: &'p str) -> Result<Cow<'p, str>, PathRefusal> {
        canonical_path(path, self.allow_encoded_slash)
    }

    /// Whether the canonical `path` needs an entitled user. A path parameter (`;`) anywhere in a
    /// gated path is refused: Tomcat and Spring would route `/app;x/secret` as `/app/secret`.
    #[cfg(test)]
    pub(crate) fn is_gated(&self, path: &str) -> Result<bool, PathRefusal> {
        Ok(self.requirement(path)? != Requirement::Nothing)
    }

    /// What the canonical `path` needs: nothing, an entitled user, or one whose plan has a
    /// feature (the most specific gated prefix decides), or why it cannot be decided.
    pub(crate) fn requirement(&self, path: &str) -> Result<Requirement<'_>, PathRefusal> {
        // With encoded slashes allowed, decide on the path the product may make of them.
        let decided: Cow<str> = if self.allow_encoded_slash && path.contains("%2F") {
            Cow::Owned(canonical_path(&path.replace("%2F", "/"), false)?.into_owned())
        } else {
            Cow::Borrowed(path)
        };
        let segments = decided.split('/').filter(|s| !s.is_empty());
        // The most specific match; of equally specific ones, one that needs a feature.
        let gated = self
            .gated
            .iter()
            .filter_map(|(p, feature)| Some((self.matches(p, segments.clone(), true)?, feature.is_some(), feature)))
            .max_by_key(|(specific, has_feature, _)| (*specific, *has_feature));
        let Some((gated, _, feature)) = gated else { return Ok(Requirement::Nothing) };
        let open = self.open.iter().filter_map(|p| self.matches(p, segments.clone(), false)).max();
        if open.is_some_and(|open| open > gated) {
            return Ok(Requirement::Nothing);
        }
        if decided.contains(';') || (decided.contains('%') && decided.split('/').any(|s| decoded(s).any(|b| b == b';'))) {
            return Err(PathRefusal::PathParameter);
        }
        Ok(feature.as_deref().map_or(Requirement::Entitled, Requirement::Feature))
    }

    /// How specific `prefix`'s match of `segments` is, if it matches.
    fn matches<'p>(&self, prefix: &Prefix, mut segments: impl Iterator<Item = &'p str>, loose: bool) -> Option<usize> {
        match prefix {
            Prefix::Everything => Some(0),
            Prefix::Root => segments.next().is_none().then_some(1),
            Prefix::Segments(wanted) => {
                let all = wanted.iter().all(|wanted| segments.next().is_some_and(|segment| self.segment_matches(segment, wanted, loose)));
                all.then_some(2 * wanted.len())
            }
        }
    }

    fn segment_matches(&self, segment: &str, wanted: &str, loose: bool) -> bool {
        let mut bytes = decoded(segment).map(|b| if self.case_insensitive { b.to_ascii_lowercase() } else { b });
        if !wanted.bytes().all(|w| bytes.next() == Some(w)) {
            return false;
        }
        match bytes.next() {
            None => true,
            Some(next) => loose && !(next.is_ascii_alphanumeric() || matches!(next, b'-' | b'_' | b'~')),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(path: &str) -> Result<String, PathRefusal> {
        canonical_path(path, false).map(Cow::into_owned)
    }

    #[test]
    fn paths_become_canonical() {
        for (raw, expected) in [
            ("/", "/"),
            ("/app/secret", "/app/secret"),
            ("/%61pp/secret", "/app/secret"),
            ("/ap%70/secret", "/app/secret"),
            ("//app/secret", "/app/secret"),
            ("/app//secret", "/app/secret"),
            ("/x/../app/secret", "/app/secret"),
            ("/auth/../app/secret", "/app/secret"),
            ("/./app/secret", "/app/secret"),
            ("/app/.", "/app/"),
            ("/app/x/..", "/app/"),
            ("/app/", "/app/"),
            ("//", "/"),
            ("/a%20b/%c3%a9", "/a%20b/%C3%A9"),
            ("/app;x/y", "/app;x/y"),
            ("/%7euser", "/~user"),
            ("/x/%2e%2E-not-dots", "refused"),
        ] {
            match canonical(raw) {
                Ok(got) => assert_eq!(got, expected, "{raw}"),
                Err(e) => assert_eq!("refused", expected, "{raw}: {e}"),
            }
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (raw, refusal) in [
            ("/app%2fsecret", PathRefusal::Encoded("slash (%2F)")),
            ("/x/..%2fapp/secret", PathRefusal::Encoded("slash (%2F)")),
            ("/%2e%2e/app", PathRefusal::Encoded("dot (%2E)")),
            ("/app%5csecret", PathRefusal::Encoded("backslash (%5C)")),
            ("/app%25%32%66x", PathRefusal::Encoded("percent sign (%25)")),
            ("/app%00", PathRefusal::Encoded("control character")),
            ("/app%0a", PathRefusal::Encoded("control character")),
            ("/app\\secret", PathRefusal::Backslash),
            ("/../app", PathRefusal::AboveRoot),
            ("/app/../../x", PathRefusal::AboveRoot),
            ("/app%zz", PathRefusal::BrokenEscape),
            ("/x/..;/app/secret", PathRefusal::DotWithParameter),
            ("/x/.;x/app", PathRefusal::DotWithParameter),
            ("/x/..%3B/app", PathRefusal::DotWithParameter),
            ("/app%2", PathRefusal::BrokenEscape),
            ("/\u{e9}", PathRefusal::NotAscii),
            ("*", PathRefusal::NotAPath),
            ("app", PathRefusal::NotAPath),
        ] {
            assert_eq!(canonical(raw), Err(refusal), "{raw}");
        }
        assert_eq!(canonical_path("/app%2fsecret", true).unwrap(), "/app%2Fsecret", "kept when the product wants it");
    }

    fn gate(gated: &[&str], open: &[&str], case_insensitive: bool) -> GatePaths {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        GatePaths::new(&tollgate_core::config::GateSettings {
            gated_paths: strings(gated),
            open_paths: strings(open),
            api_paths: Vec::new(),
            feature_paths: Vec::new(),
            case_insensitive,
            allow_encoded_slash: false,
            trust_forwarded_uri: false,
        })
    }

    #[test]
    fn a_prefix_may_need_a_feature_and_the_most_specific_decides() {
        let features = GatePaths::new(&tollgate_core::config::GateSettings {
            gated_paths: vec!["/app".into(), "/app/export".into(), "/api/ai".into()],
            feature_paths: vec![("/app/export".into(), "export".into()), ("/api/ai".into(), "ai-assistant".into())],
            open_paths: vec!["/app/export/help".into()],
            api_paths: vec!["/api/v1".into()],
            case_insensitive: false,
            allow_encoded_slash: false,
            trust_forwarded_uri: false,
        });
        assert_eq!(features.requirement("/app/projects"), Ok(Requirement::Entitled));
        assert_eq!(features.requirement("/app/export"), Ok(Requirement::Feature("export")));
        assert_eq!(features.requirement("/app/export.csv"), Ok(Requirement::Feature("export")), "what a framework maps onto it");
        assert_eq!(features.requirement("/app/export/2026"), Ok(Requirement::Feature("export")));
        assert_eq!(features.requirement("/app/exports"), Ok(Requirement::Entitled), "whole segments");
        assert_eq!(features.requirement("/api/ai/chat"), Ok(Requirement::Feature("ai-assistant")));
        assert_eq!(features.requirement("/app/export/help"), Ok(Requirement::Nothing), "a longer open prefix wins");
        assert_eq!(features.requirement("/api/v1/items"), Ok(Requirement::Entitled), "the API's paths are gated");
        assert!(
            features.is_api("/api/v1")
                && features.is_api("/api/v1/items")
                && !features.is_api("/api/v10")
                && !features.is_api("/api/v1.json")
        );
        assert_eq!(features.requirement("/docs"), Ok(Requirement::Nothing));
        assert_eq!(features.requirement("/app/export;x"), Err(PathRefusal::PathParameter));
    }

    #[test]
    fn gated_prefixes_match_whole_segments_and_what_a_framework_maps_onto_them() {
        let paths = gate(&["/app", "/api/reports"], &[], false);
        for gated in
            ["/app", "/app/", "/app/x/y", "/api/reports/1", "/app.json", "/app./x", "/app%20", "/app%3F", "/app+x", "/api/reports.csv"]
        {
            assert_eq!(paths.is_gated(gated), Ok(true), "{gated}");
        }
        for open in ["/", "/apple", "/application/x", "/app-2", "/app_old", "/api/reportsx", "/docs", "/APP/secret"] {
            assert_eq!(paths.is_gated(open), Ok(false), "{open}");
        }
        for refused in ["/app;x", "/app;jsessionid=1/secret", "/app/a;b", "/app%3Bx"] {
            assert_eq!(paths.is_gated(refused), Err(PathRefusal::PathParameter), "{refused}");
        }
        assert_eq!(paths.is_gated("/docs;x"), Ok(false), "a parameter on an open path is the product's business");
        let insensitive = gate(&["/app"], &[], true);
        assert_eq!(insensitive.is_gated("/APP/secret"), Ok(true));
        assert_eq!(insensitive.is_gated("/Ap%50/secret"), Ok(true));
    }

    #[test]
    fn the_whole_product_gated_except_open_paths() {
        let paths = gate(&["/"], &["/", "/static", "/favicon.ico"], false);
        for open in ["/", "/static", "/static/app.js", "/favicon.ico"] {
            assert_eq!(paths.is_gated(open), Ok(false), "{open}");
        }
        for gated in ["/shop.json", "/app", "/static.json", "/staticx/a", "/favicon.ico.json", "/x/static"] {
            assert_eq!(paths.is_gated(gated), Ok(true), "{gated}");
        }
        assert_eq!(paths.is_gated("/static;x/a"), Err(PathRefusal::PathParameter));
        // A gated prefix longer than an open one wins.
        let nested = gate(&["/docs/private"], &["/docs"], false);
        assert_eq!(nested.is_gated("/docs/private/x"), Ok(true));
        assert_eq!(nested.is_gated("/docs/public"), Ok(false));
    }

    #[test]
    fn encoded_slashes_when_allowed_are_decided_decoded() {
        let paths = GatePaths { allow_encoded_slash: true, ..gate(&["/app"], &[], false) };
        assert_eq!(paths.canonical("/x%2f..%2fapp/secret").unwrap(), "/x%2F..%2Fapp/secret");
        assert_eq!(paths.is_gated("/x%2F..%2Fapp/secret"), Ok(true));
        assert_eq!(paths.is_gated("/docs%2Fapp"), Ok(false));
        assert_eq!(paths.is_gated("/..%2Fapp"), Err(PathRefusal::AboveRoot));
    }

    proptest::proptest! {
        /// A canonical path is its own canonical form, starts with `/`, and has no empty, `.` or
        /// `..` segment; whatever the input, no panic.
        #[test]
        fn canonical_paths_are_stable(raw in "(/|//|\\.|\\.\\.|%2[eEfF]|%6[1-9]|%[0-9A-Fa-f]{2}|[a-z;%]){0,12}") {
            if let Ok(once) = canonical_path(&raw, false) {
                let twice = canonical_path(&once, false).unwrap();
                proptest::prop_assert_eq!(&once, &twice);
                proptest::prop_assert!(once.starts_with('/') && !once.contains("//"));
                proptest::prop_assert!(!once.split('/').any(|s| s == "." || s == ".."));
                proptest::prop_assert!(matches!(twice, Cow::Borrowed(_)), "the fast path knows it");
            }
        }
    }
}
