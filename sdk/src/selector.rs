//! Label and field selectors, as `kubectl get -l ...`, `--field-selector ...`
//! and the `labelSelector` / `fieldSelector` query parameters carry them, and
//! as workloads' `spec.selector` (`matchLabels` / `matchExpressions`) spells
//! them.
//!
//! The string syntax, its validation and its matching rules follow
//! `k8s.io/apimachinery/pkg/labels` and `pkg/fields`:
//!
//! ```
//! use std::collections::BTreeMap;
//! use skiff_sdk::selector::{FieldSelector, LabelSelector};
//!
//! let sel = LabelSelector::parse("app=web, tier in (front,edge), !canary").unwrap();
//! let labels = BTreeMap::from([("app".to_owned(), "web".to_owned()), ("tier".to_owned(), "edge".to_owned())]);
//! assert!(sel.matches(&labels));
//! assert_eq!(sel.to_string(), "app=web,!canary,tier in (edge,front)");
//!
//! let fields = FieldSelector::parse("status.phase!=Succeeded,spec.nodeName=n1").unwrap();
//! let pod = |f: &str| match f {
//!     "status.phase" => Some("Running".to_owned()),
//!     "spec.nodeName" => Some("n1".to_owned()),
//!     _ => None,
//! };
//! assert!(fields.matches(pod));
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// A selector that does not parse or does not validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A label selector string.
    #[error("invalid label selector {selector:?}: {reason}")]
    Label { selector: String, reason: String },
    /// A structured label selector; `path` is the field at fault, e.g.
    /// `matchExpressions[1].operator`.
    #[error("invalid label selector: {path}: {reason}")]
    Structured { path: String, reason: String },
    /// A field selector string.
    #[error("invalid field selector {selector:?}: {reason}")]
    Field { selector: String, reason: String },
}

// ---------------------------------------------------------------------------
// Label selectors

/// How a [`Requirement`] compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// `key=value` or `key==value`: the label is set to the value.
    Equals,
    /// `key!=value`: the label is unset or set to something else.
    NotEquals,
    /// `key in (a,b)`: the label is set to one of the values.
    In,
    /// `key notin (a,b)`: the label is unset or set to none of the values.
    NotIn,
    /// `key`: the label is set.
    Exists,
    /// `!key`: the label is unset.
    DoesNotExist,
    /// `key>3`: the label is an integer greater than the value.
    GreaterThan,
    /// `key<3`: the label is an integer less than the value.
    LessThan,
}

/// One term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and without duplicates.
    values: Vec<String>,
}

impl Requirement {
    /// A validated requirement. The error says what is wrong, naming the key
    /// or value.
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, String> {
        let key = key.into();
        let mut values: Vec<String> = values.into_iter().map(Into::into).collect();
        values.sort();
        values.dedup();
        validate_label_key(&key)?;
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(format!(
                    "key {key:?}: for 'in', 'notin' operators, values set can't be empty"
                ));
            }
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                return Err(format!(
                    "key {key:?}: exact-match compatibility requires one single value"
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(format!(
                    "key {key:?}: values set must be empty for exists and does not exist"
                ));
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return Err(format!(
                        "key {key:?}: for 'gt', 'lt' operators, exactly one value is required"
                    ));
                }
                if values[0].parse::<i64>().is_err() {
                    return Err(format!(
                        "key {key:?}: for 'gt', 'lt' operators, the value must be an integer, not {:?}",
                        values[0]
                    ));
                }
            }
            _ => {}
        }
        for v in &values {
            validate_label_value(v).map_err(|e| format!("value {v:?} for key {key:?}: {e}"))?;
        }
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label of this requirement's key, set to `value` (or unset),
    /// satisfies it.
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match (self.operator, value) {
            (Operator::Equals | Operator::In, Some(v)) => has(v),
            (Operator::Equals | Operator::In, None) => false,
            (Operator::NotEquals | Operator::NotIn, Some(v)) => !has(v),
            (Operator::NotEquals | Operator::NotIn, None) => true,
            (Operator::Exists, v) => v.is_some(),
            (Operator::DoesNotExist, v) => v.is_none(),
            (Operator::GreaterThan | Operator::LessThan, None) => false,
            (op @ (Operator::GreaterThan | Operator::LessThan), Some(v)) => {
                let (Ok(have), Ok(want)) = (v.parse::<i64>(), self.values[0].parse::<i64>()) else {
                    return false;
                };
                if op == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let first = self.values.first().map_or("", String::as_str);
        match self.operator {
            Operator::Exists => write!(f, "{key}"),
            Operator::DoesNotExist => write!(f, "!{key}"),
            Operator::Equals => write!(f, "{key}={first}"),
            Operator::NotEquals => write!(f, "{key}!={first}"),
            Operator::GreaterThan => write!(f, "{key}>{first}"),
            Operator::LessThan => write!(f, "{key}<{first}"),
            Operator::In => write!(f, "{key} in ({})", self.values.join(",")),
            Operator::NotIn => write!(f, "{key} notin ({})", self.values.join(",")),
        }
    }
}

/// A label selector: all of its requirements must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    /// Sorted by key.
    requirements: Vec<Requirement>,
    /// A null structured selector, which selects nothing.
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches every object (the empty string, `{}`).
    pub fn everything() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: false,
        }
    }

    /// The selector that matches no object (a null structured selector).
    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// A selector of the given requirements.
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            requirements,
            nothing: false,
        }
    }

    pub fn is_everything(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Parse the string syntax: comma-separated `key=value`, `key==value`,
    /// `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key`, `!key`,
    /// `key>n`, `key<n`, with whitespace allowed between tokens. The empty
    /// string selects everything.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let error = |reason: String| SelectorError::Label {
            selector: selector.to_owned(),
            reason,
        };
        let tokens = lex(selector).map_err(error)?;
        let requirements = Parser { tokens, pos: 0 }.parse().map_err(error)?;
        Ok(Self::from_requirements(requirements))
    }

    /// Build from the structured form (`metav1.LabelSelector`):
    /// `{"matchLabels": {..}, "matchExpressions": [{"key", "operator",
    /// "values"}]}` with operators `In`, `NotIn`, `Exists`, `DoesNotExist`.
    /// `null` selects nothing and `{}` everything, as in Kubernetes.
    pub fn from_json(selector: &Value) -> Result<Self, SelectorError> {
        let error = |path: String, reason: String| SelectorError::Structured { path, reason };
        let object = match selector {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(o) => o,
            _ => return Err(error("<root>".into(), "must be an object".into())),
        };
        let mut requirements = Vec::new();
        match object.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (key, value) in labels {
                    let path = format!("matchLabels.{key}");
                    let Value::String(value) = value else {
                        return Err(error(path, "must be a string".into()));
                    };
                    requirements.push(
                        Requirement::new(key.as_str(), Operator::Equals, [value.as_str()])
                            .map_err(|e| error(path, e))?,
                    );
                }
            }
            Some(_) => return Err(error("matchLabels".into(), "must be an object".into())),
        }
        match object.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for (i, expr) in exprs.iter().enumerate() {
                    let path = format!("matchExpressions[{i}]");
                    requirements
                        .push(parse_expression(expr, &path).map_err(|(at, e)| error(at, e))?);
                }
            }
            Some(_) => return Err(error("matchExpressions".into(), "must be a list".into())),
        }
        Ok(Self::from_requirements(requirements))
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// Whether an object whose label `k` is `get(k)` is selected, for labels
    /// kept in some other map (a JSON object, say).
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        !self.nothing
            && self
                .requirements
                .iter()
                .all(|r| r.matches_value(get(&r.key)))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// One `matchExpressions` item; the error carries the path of the bad field.
fn parse_expression(expr: &Value, path: &str) -> Result<Requirement, (String, String)> {
    let Value::Object(expr) = expr else {
        return Err((path.to_owned(), "must be an object".into()));
    };
    let string = |name: &str| match expr.get(name) {
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err((format!("{path}.{name}"), "must be a string".to_owned())),
        None => Err((format!("{path}.{name}"), "is required".to_owned())),
    };
    let key = string("key")?;
    let operator = match string("operator")? {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => {
            return Err((
                format!("{path}.operator"),
                format!("{other:?} is not a valid label selector operator"),
            ));
        }
    };
    let values = match expr.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(vs)) => {
            let mut out = Vec::with_capacity(vs.len());
            for (i, v) in vs.iter().enumerate() {
                let Value::String(v) = v else {
                    return Err((format!("{path}.values[{i}]"), "must be a string".into()));
                };
                out.push(v.as_str());
            }
            out
        }
        Some(_) => return Err((format!("{path}.values"), "must be a list".into())),
    };
    Requirement::new(key, operator, values).map_err(|e| (path.to_owned(), e))
}

/// A token of the label selector syntax, with the text it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A key, a value, or one of the words `in` / `notin`.
    Ident(String),
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
    Open,
    Close,
    Comma,
    End,
}

impl Token {
    /// How the token appears in an error message.
    fn text(&self) -> &str {
        match self {
            Token::Ident(s) => s,
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Greater => ">",
            Token::Less => "<",
            Token::Open => "(",
            Token::Close => ")",
            Token::Comma => ",",
            Token::End => "end of string",
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Split a selector into tokens. Symbols are read greedily (`!=` is one
/// token, `=!` two); anything between whitespace and symbols is an
/// identifier.
fn lex(input: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if is_whitespace(c) {
            chars.next();
            continue;
        }
        if is_special(c) {
            chars.next();
            let two = chars.peek().map(|&(_, d)| d);
            let token = match (c, two) {
                ('!', Some('=')) => Some(Token::NotEquals),
                ('=', Some('=')) => Some(Token::DoubleEquals),
                _ => None,
            };
            if let Some(t) = token {
                chars.next();
                tokens.push(t);
                continue;
            }
            tokens.push(match c {
                '!' => Token::Bang,
                '=' => Token::Equals,
                '>' => Token::Greater,
                '<' => Token::Less,
                '(' => Token::Open,
                ')' => Token::Close,
                ',' => Token::Comma,
                _ => unreachable!("is_special"),
            });
            continue;
        }
        let mut end = input.len();
        while let Some(&(i, d)) = chars.peek() {
            if is_whitespace(d) || is_special(d) {
                end = i;
                break;
            }
            chars.next();
        }
        tokens.push(Token::Ident(input[start..end].to_owned()));
    }
    tokens.push(Token::End);
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn parse(mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            match self.peek() {
                Token::End => return Ok(requirements),
                Token::Ident(_) | Token::Bang => {
                    requirements.push(self.requirement()?);
                    match self.next() {
                        Token::End => return Ok(requirements),
                        Token::Comma => match self.peek() {
                            Token::Ident(_) | Token::Bang => {}
                            t => {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.text()
                                ));
                            }
                        },
                        t => {
                            return Err(format!(
                                "found '{}', expected: ',' or end of string",
                                t.text()
                            ));
                        }
                    }
                }
                t => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or end of string",
                        t.text()
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let negated = *self.peek() == Token::Bang;
        if negated {
            self.next();
        }
        let key = match self.next() {
            Token::Ident(k) => k,
            t => return Err(format!("found '{}', expected: identifier", t.text())),
        };
        let no_values = Vec::<String>::new();
        if negated {
            // Whatever follows `!key` is checked by the caller, which wants a
            // comma or the end.
            return Requirement::new(key, Operator::DoesNotExist, no_values);
        }
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Requirement::new(key, Operator::Exists, no_values);
        }
        let operator = match self.next() {
            Token::Ident(w) if w == "in" => Operator::In,
            Token::Ident(w) if w == "notin" => Operator::NotIn,
            Token::Equals | Token::DoubleEquals => Operator::Equals,
            Token::NotEquals => Operator::NotEquals,
            Token::Greater => Operator::GreaterThan,
            Token::Less => Operator::LessThan,
            t => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, >, <",
                    t.text()
                ));
            }
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        Requirement::new(key, operator, values)
    }

    /// The value after `=`, `!=`, `>`, `<`: an identifier, or nothing (the
    /// empty string) before a comma or the end.
    fn exact_value(&mut self) -> Result<String, String> {
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(String::new());
        }
        match self.next() {
            Token::Ident(v) => Ok(v),
            t => Err(format!("found '{}', expected: identifier", t.text())),
        }
    }

    /// `( v1, v2 )`. As in Kubernetes, an empty member is the empty string:
    /// `()` is `("")` and `(a,)` is `(a,"")`.
    fn value_set(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Token::Open => {}
            t => return Err(format!("found '{}', expected: '('", t.text())),
        }
        let mut values = Vec::new();
        // Whether the last thing read was a value (so a comma or `)` must
        // follow) rather than `(` or a comma.
        let mut after_value = false;
        loop {
            match self.next() {
                Token::Close => {
                    if !after_value {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                Token::Comma if after_value => after_value = false,
                Token::Comma => values.push(String::new()),
                Token::Ident(v) if !after_value => {
                    values.push(v);
                    after_value = true;
                }
                t if after_value => {
                    return Err(format!("found '{}', expected: ',' or ')'", t.text()));
                }
                t => {
                    return Err(format!(
                        "found '{}', expected: ',', ')' or identifier",
                        t.text()
                    ));
                }
            }
        }
    }
}

/// A label key is a qualified name: an optional DNS subdomain prefix and `/`,
/// then a name of at most 63 characters.
fn validate_label_key(key: &str) -> Result<(), String> {
    let fail = |why: &str| Err(format!("key {key:?}: {why}"));
    let name = match key.split_once('/') {
        None => key,
        Some((_, name)) if name.contains('/') => {
            return fail(
                "a qualified name must be a name with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
            );
        }
        Some(("", _)) => return fail("prefix part must be non-empty"),
        Some((prefix, name)) => {
            if prefix.len() > 253 {
                return fail("prefix part must be no more than 253 characters");
            }
            if !is_dns1123_subdomain(prefix) {
                return fail(
                    "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                );
            }
            name
        }
    };
    if name.is_empty() {
        return fail("name part must be non-empty");
    }
    if name.len() > 63 {
        return fail("name part must be no more than 63 characters");
    }
    if !is_qualified_name_part(name) {
        return fail(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        );
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters of the qualified-name set.
fn validate_label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        return Err(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into(),
        );
    }
    Ok(())
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`
fn is_dns1123_subdomain(s: &str) -> bool {
    let label_char = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    s.split('.').all(|label| {
        let b = label.as_bytes();
        match (b.first(), b.last()) {
            (Some(f), Some(l)) => {
                label_char(f) && label_char(l) && b.iter().all(|c| label_char(c) || *c == b'-')
            }
            _ => false,
        }
    })
}

// ---------------------------------------------------------------------------
// Field selectors

/// How a field requirement compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FieldOperator {
    /// `field=value` or `field==value`.
    Equals,
    /// `field!=value`.
    NotEquals,
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub operator: FieldOperator,
    /// Unescaped.
    pub value: String,
}

/// A field selector: comma-separated `field=value`, `field==value`,
/// `field!=value`. Values escape `\`, `,` and `=` with a backslash. Which
/// fields exist is the API server's business (per kind): check
/// [`FieldSelector::requirements`] before matching.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that matches everything (the empty string).
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Parse a field selector. Like Kubernetes, it trims nothing: `a = b` is
    /// the field `a ` and the value ` b`.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let error = |reason: String| SelectorError::Field {
            selector: selector.to_owned(),
            reason,
        };
        let mut terms = split_terms(selector);
        terms.sort_unstable();
        let mut requirements = Vec::with_capacity(terms.len());
        for term in terms.into_iter().filter(|t| !t.is_empty()) {
            let Some((field, operator, value)) = split_term(term) else {
                return Err(error(format!(
                    "can't understand {term:?}: want field=value, field==value or field!=value"
                )));
            };
            if field.is_empty() {
                return Err(error(format!("{term:?} has no field name")));
            }
            let value = unescape_value(value).map_err(|e| error(format!("in {term:?}: {e}")))?;
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                operator,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether an object is selected, `get` giving the value of a field. An
    /// unset field (`None`) reads as the empty string, as in Kubernetes, so
    /// `spec.nodeName=` selects pods not yet scheduled.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let have = get(&r.field).unwrap_or_default();
            match r.operator {
                FieldOperator::Equals => have == r.value,
                FieldOperator::NotEquals => have != r.value,
            }
        })
    }

    /// The value `field` must equal, if the selector pins it (`metadata.name=x`
    /// lets a server fetch one object instead of filtering a list).
    pub fn value_for(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match r.operator {
                FieldOperator::Equals => "=",
                FieldOperator::NotEquals => "!=",
            };
            write!(f, "{}{op}", r.field)?;
            for c in r.value.chars() {
                if matches!(c, '\\' | ',' | '=') {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Split on commas not escaped by a backslash.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in selector.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// The first operator in the term, trying `!=`, `==`, `=` at each position.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

fn unescape_value(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => return Err(format!("invalid escape sequence \"\\{e}\"")),
                None => return Err("a value cannot end in a single backslash".into()),
            },
            ',' | '=' => {
                return Err(format!(
                    "unescaped {c:?} in a value (escape it as \"\\{c}\")"
                ));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn parse_err(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(sel) => panic!("{s:?} parsed as {sel}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_every_operator_and_prints_canonically() {
        let cases = [
            ("", ""),
            ("x=a", "x=a"),
            ("x==a", "x=a"),
            ("x!=a", "x!=a"),
            ("x", "x"),
            ("!x", "!x"),
            ("x in (b,a,b)", "x in (a,b)"),
            ("x notin (a)", "x notin (a)"),
            ("x>1", "x>1"),
            ("x<10", "x<10"),
            (" x = a , y ", "x=a,y"),
            ("z=1,a=2", "a=2,z=1"),
            ("x=", "x="),
            ("x=,y=a", "x=,y=a"),
            ("x in ()", "x in ()"),
            ("x in (a,)", "x in (,a)"),
            ("example.com/role=db", "example.com/role=db"),
            ("in=notin", "in=notin"),
            ("x in (in,notin)", "x in (in,notin)"),
        ];
        for (input, want) in cases {
            assert_eq!(sel(input).to_string(), want, "{input:?}");
        }
    }

    #[test]
    fn matching_follows_kubernetes() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "missing!=x",
            "app in (web,db)",
            "missing notin (x)",
            "tier notin (back)",
            "app",
            "!missing",
            "n>4",
            "n<6",
            "app=web,tier=front",
        ];
        let no = [
            "app=db",
            "missing=x",
            "app!=web",
            "app in (db)",
            "missing in (x)",
            "tier notin (front)",
            "missing",
            "!app",
            "n>5",
            "app>1",
            "missing<10",
            "app=web,tier=back",
        ];
        for s in yes {
            assert!(sel(s).matches(&l), "{s:?} should match");
        }
        for s in no {
            assert!(!sel(s).matches(&l), "{s:?} should not match");
        }
        // An empty value selects objects whose label is set and empty.
        assert!(sel("x=").matches(&labels(&[("x", "")])));
        assert!(!sel("x=").matches(&labels(&[])));
    }

    #[test]
    fn syntax_errors_say_what_was_found() {
        assert!(parse_err("x=a=b").contains("found '=', expected: ',' or end of string"));
        assert!(parse_err("x in a").contains("found 'a', expected: '('"));
        assert!(parse_err("x in (a b)").contains("found 'b', expected: ',' or ')'"));
        assert!(parse_err("x,").contains("found 'end of string', expected: identifier after ','"));
        assert!(parse_err(",x").contains("expected: !, identifier, or end of string"));
        assert!(parse_err("x y").contains("found 'y', expected: in, notin"));
        assert!(parse_err("!x=a").contains("found '=', expected: ',' or end of string"));
        assert!(parse_err("x=(a)").contains("found '(', expected: identifier"));
        assert!(parse_err("x in (a").contains("found 'end of string'"));
        assert!(parse_err("!").contains("found 'end of string', expected: identifier"));
    }

    #[test]
    fn keys_and_values_are_validated() {
        assert!(parse_err("-x=a").contains("key \"-x\": name part must consist of"));
        assert!(parse_err("a/b/c").contains("qualified name"));
        assert!(parse_err("/x").contains("prefix part must be non-empty"));
        assert!(parse_err("Example.com/x").contains("prefix part a lowercase RFC 1123"));
        assert!(parse_err("example.com/").contains("name part must be non-empty"));
        assert!(parse_err(&format!("{}=a", "k".repeat(64))).contains("no more than 63"));
        assert!(parse_err(&format!("k={}", "v".repeat(64))).contains("value"));
        assert!(parse_err("x=a/b").contains("value \"a/b\" for key \"x\""));
        assert!(parse_err("x in (a,-b)").contains("value \"-b\""));
        assert!(parse_err("x>a").contains("must be an integer"));
        sel(&format!(
            "{}/{}={}",
            "a".repeat(253),
            "k".repeat(63),
            "v".repeat(63)
        ));
        sel("a.b_c-d=A.b_C-9");
    }

    #[test]
    fn structured_selectors() {
        let s = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "team", "operator": "Exists", "values": []}
            ]
        }))
        .unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,!canary,env notin (dev),team,tier in (edge,front)"
        );
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "edge"), ("team", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "edge")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "edge"),
            ("team", "a"),
            ("canary", "1")
        ])));

        assert!(
            LabelSelector::from_json(&json!({}))
                .unwrap()
                .is_everything()
        );
        let nothing = LabelSelector::from_json(&Value::Null).unwrap();
        assert!(!nothing.matches(&labels(&[])));
        assert!(
            LabelSelector::from_json(&json!({"matchLabels": null}))
                .unwrap()
                .matches(&labels(&[]))
        );
    }

    #[test]
    fn structured_errors_name_the_field() {
        let err = |v: Value| LabelSelector::from_json(&v).unwrap_err().to_string();
        assert_eq!(
            err(
                json!({"matchExpressions": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Gt", "values": ["1"]}]})
            ),
            "invalid label selector: matchExpressions[1].operator: \"Gt\" is not a valid label selector operator"
        );
        assert!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}))
                .contains("matchExpressions[0]: key \"a\": for 'in', 'notin' operators, values set can't be empty")
        );
        assert!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}))
                .contains("values set must be empty")
        );
        assert!(err(json!({"matchLabels": {"a": 1}})).contains("matchLabels.a: must be a string"));
        assert!(err(json!({"matchLabels": {"a b": "c"}})).contains("matchLabels.a b: key \"a b\""));
        assert!(
            err(json!({"matchExpressions": [{"operator": "Exists"}]}))
                .contains("matchExpressions[0].key: is required")
        );
    }

    #[test]
    fn matches_with_json_labels() {
        let obj = json!({"metadata": {"labels": {"app": "web"}}});
        let labels = obj["metadata"]["labels"].as_object().unwrap();
        assert!(sel("app=web").matches_with(|k| labels.get(k).and_then(Value::as_str)));
        assert!(!sel("app=db").matches_with(|k| labels.get(k).and_then(Value::as_str)));
    }

    fn pod_field(f: &str) -> Option<String> {
        match f {
            "metadata.name" => Some("web-1".into()),
            "metadata.namespace" => Some("default".into()),
            "status.phase" => Some("Running".into()),
            "spec.nodeName" => None,
            "metadata.annotations.x" => Some("a,b=c".into()),
            _ => None,
        }
    }

    #[test]
    fn field_selectors() {
        let yes = [
            "",
            "metadata.name=web-1",
            "metadata.name==web-1",
            "status.phase!=Succeeded",
            "metadata.namespace=default,status.phase=Running",
            "spec.nodeName=",
            "metadata.annotations.x=a\\,b\\=c",
            "metadata.name=web-1,",
        ];
        let no = [
            "metadata.name=web-2",
            "status.phase!=Running",
            "spec.nodeName!=",
            "metadata.namespace=default,status.phase=Failed",
        ];
        for s in yes {
            let f = FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert!(f.matches(pod_field), "{s:?} should match");
        }
        for s in no {
            assert!(
                !FieldSelector::parse(s).unwrap().matches(pod_field),
                "{s:?} should not match"
            );
        }
        let f = FieldSelector::parse("status.phase!=Failed,metadata.name=a\\,b").unwrap();
        assert_eq!(f.to_string(), "metadata.name=a\\,b,status.phase!=Failed");
        assert_eq!(f.value_for("metadata.name"), Some("a,b"));
        assert_eq!(f.value_for("status.phase"), None);
        assert_eq!(
            f.requirements()[1],
            FieldRequirement {
                field: "status.phase".into(),
                operator: FieldOperator::NotEquals,
                value: "Failed".into()
            }
        );
    }

    #[test]
    fn field_selector_errors() {
        let err = |s: &str| FieldSelector::parse(s).unwrap_err().to_string();
        assert!(err("a>b").contains("can't understand \"a>b\""));
        assert!(err("a in (b)").contains("can't understand"));
        assert!(err("a=b=c").contains("unescaped '='"));
        assert!(err("a=b\\x").contains("invalid escape sequence"));
        assert!(err("a=b\\").contains("single backslash"));
        assert!(err("=b").contains("no field name"));
        assert_eq!(
            err("x"),
            "invalid field selector \"x\": can't understand \"x\": want field=value, field==value or field!=value"
        );
    }
}
