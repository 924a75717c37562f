//! Stripe's form encoding: `a[b][0][c]=v` pairs parsed into a tree, and typed access to it.
//!
//! Every handler names the parameters it accepts (`Params::allow`), so an unknown one is a 400
//! `parameter_unknown` just as in Stripe, and reads values through getters that turn a wrong type
//! into a 400 `parameter_invalid_*` naming the parameter.

use crate::model::ApiError;

/// One node of a parsed form: a leaf string or a nested map (Stripe arrays are maps keyed by index).
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Value(String),
    Map(Vec<(String, Node)>),
}

/// Stripe's deepest parameters have five parts (`line_items[0][price_data][recurring][interval]`);
/// anything much deeper is refused before it is parsed, so input cannot drive recursion deep.
const MAX_KEY_PARTS: usize = 8;
/// More pairs than any Stripe request needs (50 metadata keys, 100 line items …): refused, so
/// one request cannot cost seconds of parsing.
const MAX_PAIRS: usize = 1000;

/// Keys appended with `[]` get this mark before their index, so a hash (`metadata`) can refuse
/// array syntax while arrays accept both `[]` and `[0]`.
const APPENDED: char = '\u{1}';

/// The parameters of one request (or one nested hash of it), with the dotted path used in errors.
#[derive(Debug, Clone, Default)]
pub struct Params {
    prefix: String,
    entries: Vec<(String, Node)>,
}

/// Split `line_items[0][price]` into `["line_items", "0", "price"]`; `None` when the brackets are malformed.
fn split_key(key: &str) -> Option<Vec<&str>> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if head.is_empty() {
        return None;
    }
    let mut parts = vec![head];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let close = inner.find(']')?;
        parts.push(&inner[..close]);
        rest = &inner[close + 1..];
    }
    Some(parts)
}

fn insert(entries: &mut Vec<(String, Node)>, parts: &[&str], value: String, full_key: &str) -> Result<(), ApiError> {
    let conflict =
        || ApiError::invalid(format!("Invalid array or hash for parameter {full_key}"), Some(full_key), "parameter_invalid_hash");
    let segment = if parts[0].is_empty() { format!("{APPENDED}{}", entries.len()) } else { parts[0].to_string() };
    if parts.len() == 1 {
        match entries.iter_mut().find(|(k, _)| *k == segment) {
            Some((_, Node::Map(_))) => return Err(conflict()),
            Some((_, slot)) => *slot = Node::Value(value),
            None => entries.push((segment, Node::Value(value))),
        }
        return Ok(());
    }
    // `[]` in the middle of a key (`items[][price]`) opens a new element each time, as Rack does for a repeated first field.
    let position = if parts[0].is_empty() { None } else { entries.iter().position(|(k, _)| *k == segment) };
    let index = match position {
        Some(i) => i,
        None => {
            entries.push((segment, Node::Map(Vec::new())));
            entries.len() - 1
        }
    };
    match &mut entries[index].1 {
        Node::Map(children) => insert(children, &parts[1..], value, full_key),
        Node::Value(_) => Err(conflict()),
    }
}

impl Params {
    /// Parse `application/x-www-form-urlencoded` bytes (a body or a query string).
    pub fn parse(raw: &[u8]) -> Result<Params, ApiError> {
        let mut params = Params::default();
        params.extend(raw)?;
        Ok(params)
    }

    /// Add more pairs (the query string after the body, say) to these parameters.
    pub fn extend(&mut self, raw: &[u8]) -> Result<(), ApiError> {
        for (n, (key, value)) in form_urlencoded::parse(raw).enumerate() {
            if n >= MAX_PAIRS {
                return Err(ApiError::bad_request(format!("Too many parameters: a request may send at most {MAX_PAIRS}.")));
            }
            if key.is_empty() {
                continue;
            }
            let shown: String = key.chars().take(80).collect();
            let parts = split_key(&key)
                .ok_or_else(|| ApiError::invalid(format!("Invalid parameter name: {shown}"), Some(&shown), "parameter_unknown"))?;
            if parts.len() > MAX_KEY_PARTS {
                return Err(ApiError::invalid(
                    format!("Parameter {shown}… is nested too deeply (at most {MAX_KEY_PARTS} levels)."),
                    Some(parts[0]),
                    "parameter_unknown",
                ));
            }
            insert(&mut self.entries, &parts, value.into_owned(), &key)?;
        }
        Ok(())
    }

    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}[{}]", self.prefix, name)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    fn node(&self, name: &str) -> Option<&Node> {
        self.entries.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn has(&self, name: &str) -> bool {
        self.node(name).is_some()
    }

    /// Reject any parameter not in `allowed` with Stripe's `parameter_unknown`.
    pub fn allow(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.entries.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            None => Ok(()),
            Some((k, _)) => {
                let path = self.path(k);
                Err(ApiError::invalid(format!("Received unknown parameter: {path}"), Some(&path), "parameter_unknown"))
            }
        }
    }

    /// A string parameter; a hash where a string belongs is `parameter_invalid_string`.
    pub fn str(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.node(name) {
            None => Ok(None),
            Some(Node::Value(v)) => Ok(Some(v.as_str())),
            Some(Node::Map(_)) => {
                let path = self.path(name);
                Err(ApiError::invalid(format!("Invalid string: {path} must be a string"), Some(&path), "parameter_invalid_string"))
            }
        }
    }

    /// A string that must be present and not empty.
    pub fn required_str(&self, name: &str) -> Result<&str, ApiError> {
        match self.str(name)? {
            Some(v) if !v.is_empty() => Ok(v),
            Some(_) => {
                let path = self.path(name);
                Err(ApiError::invalid(
                    format!("You passed an empty string for '{path}'. We assume empty values are an attempt to unset a parameter; however '{path}' cannot be unset."),
                    Some(&path),
                    "parameter_invalid_empty",
                ))
            }
            None => Err(self.missing(name)),
        }
    }

    /// A string that may be absent but, when given, must not be empty.
    pub fn non_empty_str(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.str(name)? {
            None => Ok(None),
            Some(_) => self.required_str(name).map(Some),
        }
    }

    pub fn missing(&self, name: &str) -> ApiError {
        let path = self.path(name);
        ApiError::invalid(format!("Missing required param: {path}."), Some(&path), "parameter_missing")
    }

    pub fn invalid(&self, name: &str, message: impl Into<String>) -> ApiError {
        let path = self.path(name);
        ApiError::invalid(message, Some(&path), "parameter_invalid_value")
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.str(name)? {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                let path = self.path(name);
                ApiError::invalid(format!("Invalid integer: {v}"), Some(&path), "parameter_invalid_integer")
            }),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.str(name)? {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => {
                let path = self.path(name);
                Err(ApiError::invalid(format!("Invalid boolean: {v}"), Some(&path), "parameter_invalid_boolean"))
            }
        }
    }

    /// A string that must be one of `choices`.
    pub fn one_of(&self, name: &str, choices: &[&str]) -> Result<Option<&str>, ApiError> {
        match self.str(name)? {
            None => Ok(None),
            Some(v) if choices.contains(&v) => Ok(Some(v)),
            Some(v) => Err(self.invalid(name, format!("Invalid {}: must be one of {} (got '{v}')", self.path(name), choices.join(", ")))),
        }
    }

    /// A nested hash (`metadata[...]`, `recurring[...]`). An empty string means "unset" and yields an empty hash.
    pub fn hash(&self, name: &str) -> Result<Option<Params>, ApiError> {
        match self.node(name) {
            None => Ok(None),
            Some(Node::Map(entries)) => Ok(Some(Params { prefix: self.path(name), entries: entries.clone() })),
            Some(Node::Value(v)) if v.is_empty() => Ok(Some(Params { prefix: self.path(name), entries: Vec::new() })),
            Some(Node::Value(_)) => {
                let path = self.path(name);
                Err(ApiError::invalid(format!("Invalid hash: {path} must be a hash"), Some(&path), "parameter_invalid_hash"))
            }
        }
    }

    /// An array of hashes (`line_items[0][price]`), in index order.
    pub fn list(&self, name: &str) -> Result<Vec<Params>, ApiError> {
        let Some(hash) = self.hash(name)? else { return Ok(Vec::new()) };
        let mut items: Vec<(usize, Params)> = Vec::new();
        for (key, node) in &hash.entries {
            let index: usize = key
                .trim_start_matches(APPENDED)
                .parse()
                .map_err(|_| hash.invalid(key, format!("Invalid array: {} must be an array", hash.prefix)))?;
            match node {
                Node::Map(entries) => items.push((index, Params { prefix: format!("{}[{}]", hash.prefix, key), entries: entries.clone() })),
                Node::Value(_) => return Err(hash.invalid(key, format!("Invalid object: {}[{key}] must be a hash", hash.prefix))),
            }
        }
        items.sort_by_key(|(i, _)| *i);
        Ok(items.into_iter().map(|(_, p)| p).collect())
    }

    /// An array of strings (`expand[]=a&expand[]=b` or `expand[0]=a`), in index order; a lone empty string clears it.
    pub fn str_list(&self, name: &str) -> Result<Vec<String>, ApiError> {
        match self.node(name) {
            None => Ok(Vec::new()),
            Some(Node::Value(v)) if v.is_empty() => Ok(Vec::new()),
            Some(Node::Value(_)) => Err(self.invalid(name, format!("Invalid array: {} must be an array", self.path(name)))),
            Some(Node::Map(entries)) => {
                let mut items: Vec<(usize, String)> = Vec::new();
                for (key, node) in entries {
                    let index: usize = key
                        .trim_start_matches(APPENDED)
                        .parse()
                        .map_err(|_| self.invalid(name, format!("Invalid array: {} must be an array", self.path(name))))?;
                    match node {
                        Node::Value(v) => items.push((index, v.clone())),
                        Node::Map(_) => {
                            return Err(self.invalid(name, format!("Invalid array: {}[{key}] must be a string", self.path(name))))
                        }
                    }
                }
                items.sort_by_key(|(i, _)| *i);
                Ok(items.into_iter().map(|(_, v)| v).collect())
            }
        }
    }

    /// Flat string pairs of a hash such as `metadata`: nested values are refused.
    pub fn string_pairs(&self) -> Result<Vec<(String, String)>, ApiError> {
        self.entries
            .iter()
            .map(|(k, node)| match node {
                Node::Value(_) if k.starts_with(APPENDED) => Err(ApiError::invalid(
                    format!("Invalid hash: {} must be a hash, not an array", self.prefix),
                    Some(&self.prefix),
                    "parameter_invalid_value",
                )),
                Node::Value(v) => Ok((k.clone(), v.clone())),
                Node::Map(_) => Err(self.invalid(k, format!("Invalid value for {}: must be a string", self.path(k)))),
            })
            .collect()
    }

    /// A canonical text of all pairs, used to compare the parameters of idempotent retries.
    pub fn fingerprint(&self) -> String {
        fn walk(prefix: &str, entries: &[(String, Node)], out: &mut Vec<String>) {
            for (k, node) in entries {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}[{k}]") };
                match node {
                    Node::Value(v) => out.push(format!("{key}={v}")),
                    Node::Map(children) => walk(&key, children, out),
                }
            }
        }
        let mut out = Vec::new();
        walk("", &self.entries, &mut out);
        out.sort();
        out.join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_brackets_and_arrays() {
        let p = Params::parse(b"line_items[0][price]=price_a&line_items[0][quantity]=2&line_items[1][price]=price_b&metadata[userId]=u1&expand[]=a&expand[]=b").unwrap();
        let items = p.list("line_items").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].str("price").unwrap(), Some("price_a"));
        assert_eq!(items[0].int("quantity").unwrap(), Some(2));
        assert_eq!(items[1].str("price").unwrap(), Some("price_b"));
        assert_eq!(p.hash("metadata").unwrap().unwrap().string_pairs().unwrap(), vec![("userId".into(), "u1".into())]);
        assert_eq!(p.str_list("expand").unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn indexed_and_percent_encoded_brackets() {
        let p = Params::parse(b"expand%5B0%5D=data.customer&expand%5B1%5D=x").unwrap();
        assert_eq!(p.str_list("expand").unwrap(), vec!["data.customer", "x"]);
    }

    #[test]
    fn unknown_and_type_errors_name_the_parameter() {
        let p = Params::parse(b"email=a@b.c&bogus=1&metadata=x&n=abc").unwrap();
        let err = p.allow(&["email", "metadata", "n"]).unwrap_err();
        assert_eq!(err.code.as_deref(), Some("parameter_unknown"));
        assert_eq!(err.param.as_deref(), Some("bogus"));
        assert_eq!(p.hash("metadata").unwrap_err().code.as_deref(), Some("parameter_invalid_hash"));
        assert_eq!(p.int("n").unwrap_err().code.as_deref(), Some("parameter_invalid_integer"));
        assert_eq!(p.hash("email").unwrap_err().param.as_deref(), Some("email"));
        let nested = Params::parse(b"recurring[interval]=month&recurring[foo]=1").unwrap();
        let err = nested.hash("recurring").unwrap().unwrap().allow(&["interval"]).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("recurring[foo]"));
    }

    #[test]
    fn conflicting_shapes_and_bad_keys_are_errors() {
        assert!(Params::parse(b"a=1&a[b]=2").is_err());
        assert!(Params::parse(b"a[b]=1&a=2").is_err());
        assert!(Params::parse(b"a[b=1").is_err());
        assert!(Params::parse(b"[x]=1").is_err());
    }

    #[test]
    fn fingerprint_ignores_order() {
        let a = Params::parse(b"a=1&b[c]=2").unwrap();
        let b = Params::parse(b"b[c]=2&a=1").unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), Params::parse(b"a=2&b[c]=2").unwrap().fingerprint());
    }

    proptest::proptest! {
        /// Any bytes, or any mix of bracketed keys: no panic, a quick answer, and what parses can
        /// be read back.
        #[test]
        fn any_form_parses_or_is_refused(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = Params::parse(&raw);
        }

        #[test]
        fn bracketed_keys_parse_or_are_refused(pairs in proptest::collection::vec(("[a-c]{1,2}(\\[[a-c0-9]{0,2}\\]){0,12}", "[ -~]{0,8}"), 0..40)) {
            let body: String = pairs.iter().map(|(k, v)| format!("{}={}&", k, form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>())).collect();
            let started = std::time::Instant::now();
            if let Ok(params) = Params::parse(body.as_bytes()) {
                proptest::prop_assert!(params.keys().count() <= pairs.len());
            }
            proptest::prop_assert!(started.elapsed() < std::time::Duration::from_millis(100));
        }
    }
}
