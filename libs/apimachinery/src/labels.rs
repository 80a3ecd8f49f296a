//! Label selectors, as upstream's `k8s.io/apimachinery/pkg/labels`: the string form that
//! `?labelSelector=` and `kubectl -l` carry (`a=b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`,
//! `!a`, comma = AND), the `metav1.LabelSelector` JSON form that workloads carry
//! (`matchLabels`, `matchExpressions`), matching against a label map, and the canonical string
//! form (upstream `String()`, which the Scale subresource reports as `status.selector`).
//! Parse errors carry upstream's wording, since the API server returns them to clients.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::validation::{is_qualified_name, is_valid_label_value};

/// Why a selector could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The string form is malformed between requirements (upstream's top-level parser errors,
    /// e.g. `found ',', expected: !, identifier, or 'end of string'`).
    #[error("{0}")]
    Syntax(String),
    /// One requirement of the string form is malformed or invalid.
    #[error("unable to parse requirement: {0}")]
    Requirement(String),
    /// A requirement built from structured input is invalid (upstream `NewRequirement`'s
    /// aggregated field errors, e.g. `values: Invalid value: []string(nil): …`).
    #[error("{0}")]
    Invalid(String),
    /// A `matchExpressions[].operator` other than In, NotIn, Exists, DoesNotExist.
    #[error("{0:?} is not a valid pod selector operator")]
    UnknownOperator(String),
    /// The `metav1.LabelSelector` JSON has the wrong shape.
    #[error("invalid label selector: {0}")]
    Malformed(String),
}

/// upstream `selection.Operator`, as far as label selectors use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Operator {
    /// upstream's operator string (`=`, `==`, `!=`, `in`, `notin`, `exists`, `!`, `gt`, `lt`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equals => "=",
            Self::DoubleEquals => "==",
            Self::NotEquals => "!=",
            Self::In => "in",
            Self::NotIn => "notin",
            Self::Exists => "exists",
            Self::DoesNotExist => "!",
            Self::GreaterThan => "gt",
            Self::LessThan => "lt",
        }
    }
}

/// Anything labels can be looked up in. Non-string JSON values count as absent.
pub trait Labels {
    fn get_label(&self, key: &str) -> Option<&str>;
}

impl Labels for Map<String, Value> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

/// A JSON value holding a label object (`metadata.labels`); anything else has no labels.
impl Labels for Value {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.as_object().and_then(|m| m.get_label(key))
    }
}

impl Labels for BTreeMap<String, String> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> Labels for HashMap<String, String, S> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// One `key op values` term (upstream `labels.Requirement`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

/// Go's `%#v` of a `[]string`, which upstream puts into requirement errors.
fn go_string_slice(values: &[String]) -> String {
    if values.is_empty() {
        return "[]string(nil)".to_string();
    }
    let items = values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ");
    format!("[]string{{{items}}}")
}

/// upstream `utilerrors.NewAggregate(...).Error()` over already rendered messages.
fn aggregate(mut msgs: Vec<String>) -> String {
    let mut seen = Vec::new();
    msgs.retain(|m| {
        if seen.contains(m) {
            false
        } else {
            seen.push(m.clone());
            true
        }
    });
    match msgs.len() {
        1 => msgs.remove(0),
        _ => format!("[{}]", msgs.join(", ")),
    }
}

/// upstream `validateLabelKey`: one field error joining all messages with `; `.
fn label_key_error(key: &str, path: &str) -> Option<String> {
    let errs = is_qualified_name(key);
    (!errs.is_empty()).then(|| format!("{path}: Invalid value: {key:?}: {}", errs.join("; ")))
}

impl Requirement {
    /// upstream `NewRequirement`: validates the key, the number of values for the operator,
    /// integer values for `gt`/`lt`, and every value as a label value.
    pub fn new(key: impl Into<String>, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        let key = key.into();
        let mut errs = Vec::new();
        errs.extend(label_key_error(&key, "key"));
        let vals = go_string_slice(&values);
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => errs
                .push(format!("values: Invalid value: {vals}: for 'in', 'notin' operators, values set can't be empty")),
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if values.len() != 1 => {
                errs.push(format!("values: Invalid value: {vals}: exact-match compatibility requires one single value"))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => errs
                .push(format!("values: Invalid value: {vals}: values set must be empty for exists and does not exist")),
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(format!(
                        "values: Invalid value: {vals}: for 'Gt', 'Lt' operators, exactly one value is required"
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(format!(
                            "values[{i}]: Invalid value: {v:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let msgs = is_valid_label_value(v);
            if !msgs.is_empty() {
                errs.push(format!("values[{i}][{key}]: Invalid value: {v:?}: {}", msgs.join("; ")));
            }
        }
        if !errs.is_empty() {
            return Err(SelectorError::Invalid(aggregate(errs)));
        }
        Ok(Self { key, operator, values })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values as given (the string parser gives them sorted and deduplicated).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    fn has_value(&self, v: &str) -> bool {
        self.values.iter().any(|x| x == v)
    }

    /// upstream `Requirement.Matches`: `in`/`=` need the key with a listed value; `notin`/`!=`
    /// match a missing key; `gt`/`lt` compare as integers and fail on non-integers.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        let value = labels.get_label(&self.key);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => value.is_some_and(|v| self.has_value(v)),
            Operator::NotIn | Operator::NotEquals => value.is_none_or(|v| !self.has_value(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(Ok(have)), [want]) = (value.map(str::parse::<i64>), self.values.as_slice()) else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

/// upstream `Requirement.String()`: `!k`, `k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
/// `k notin (a)`, `k>1`, `k<1`, with several values sorted.
impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        f.write_str(&values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A label selector: the AND of its requirements, or upstream's `Nothing()` (what a null
/// `metav1.LabelSelector` converts to), which matches no object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl Selector {
    /// Matches every object (upstream `Everything()`; also what `""` parses to).
    pub fn everything() -> Self {
        Self::default()
    }

    /// Matches no object (upstream `Nothing()`). Displays as `""`, like upstream.
    pub fn nothing() -> Self {
        Self { requirements: Vec::new(), nothing: true }
    }

    /// Parses the string form (upstream `labels.Parse`). Requirements are sorted by key.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser { items: lex(s), pos: 0 };
        let mut requirements = parser.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements, nothing: false })
    }

    /// Equality requirements for every pair, unvalidated (upstream
    /// `SelectorFromValidatedSet`): use for labels that already passed validation.
    pub fn from_set<K: Into<String>, V: Into<String>>(set: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut requirements: Vec<Requirement> = set
            .into_iter()
            .map(|(k, v)| Requirement { key: k.into(), operator: Operator::Equals, values: vec![v.into()] })
            .collect();
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self { requirements, nothing: false }
    }

    /// upstream `metav1.LabelSelectorAsSelector` for the JSON form: null is `Nothing`, an
    /// empty selector is `Everything`, `matchLabels` become `=` requirements and
    /// `matchExpressions` (In, NotIn, Exists, DoesNotExist) set requirements, each validated
    /// as upstream's `NewRequirement` does.
    pub fn from_label_selector(selector: &Value) -> Result<Self, SelectorError> {
        let sel = match selector {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(m) => m,
            _ => return Err(SelectorError::Malformed("must be an object".to_string())),
        };
        let empty_map = Map::new();
        let match_labels = match sel.get("matchLabels") {
            None | Some(Value::Null) => &empty_map,
            Some(Value::Object(m)) => m,
            Some(_) => return Err(SelectorError::Malformed("matchLabels must be an object".to_string())),
        };
        let match_expressions: &[Value] = match sel.get("matchExpressions") {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(_) => return Err(SelectorError::Malformed("matchExpressions must be an array".to_string())),
        };
        let mut requirements = Vec::with_capacity(match_labels.len() + match_expressions.len());
        for (k, v) in match_labels {
            let Some(v) = v.as_str() else {
                return Err(SelectorError::Malformed(format!("matchLabels[{k}] must be a string")));
            };
            requirements.push(Requirement::new(k.as_str(), Operator::Equals, vec![v.to_string()])?);
        }
        for (i, expr) in match_expressions.iter().enumerate() {
            let field = |name: &str| expr.get(name);
            let key = match field("key") {
                None | Some(Value::Null) => "",
                Some(Value::String(s)) => s.as_str(),
                Some(_) => return Err(SelectorError::Malformed(format!("matchExpressions[{i}].key must be a string"))),
            };
            let operator = match field("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(SelectorError::UnknownOperator(other.to_string())),
            };
            let values = match field("values") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => {
                    a.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>().ok_or_else(|| {
                        SelectorError::Malformed(format!("matchExpressions[{i}].values must be strings"))
                    })?
                }
                Some(_) => {
                    return Err(SelectorError::Malformed(format!("matchExpressions[{i}].values must be an array")))
                }
            };
            requirements.push(Requirement::new(key, operator, values)?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements, nothing: false })
    }

    /// Adds a requirement, keeping them sorted by key (upstream `Add`).
    pub fn with_requirement(mut self, requirement: Requirement) -> Self {
        self.requirements.push(requirement);
        self.requirements.sort_by(|a, b| a.key.cmp(&b.key));
        self
    }

    /// True when every requirement matches (always for `Everything`, never for `Nothing`).
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True when the selector does not restrict anything (upstream `Empty()`; false for
    /// `Nothing`).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// True only for `Nothing` (upstream `MatchesNothing`).
    pub fn matches_nothing(&self) -> bool {
        self.nothing
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// upstream `RequiresExactMatch`: the single value the first requirement on `label`
    /// demands through `=`, `==` or a one-value `in`.
    pub fn requires_exact_match(&self, label: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == label)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// upstream `String()`: requirements joined by `,` (empty for `Everything` and `Nothing`).
impl fmt::Display for Selector {
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

// ---------------------------------------------------------------------------------------------
// The string form: upstream's lexer and recursive-descent parser, same tokens, same errors.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

#[derive(Debug, Clone)]
struct Item {
    tok: Tok,
    lit: String,
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Tokenizes the whole input; the last item is always `End`. Like upstream, a NUL byte ends
/// the input.
fn lex(input: &str) -> Vec<Item> {
    let s = input.split('\0').next().unwrap_or("");
    let b = s.as_bytes();
    let mut items = Vec::new();
    let mut pos = 0;
    loop {
        while pos < b.len() && is_whitespace(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() {
            items.push(Item { tok: Tok::End, lit: String::new() });
            return items;
        }
        if is_special(b[pos]) {
            // upstream reads the longest run of special characters that is still a token:
            // only `!=` and `==` are two characters long
            let two = s.get(pos..pos + 2);
            let (tok, len) = match (two, b[pos]) {
                (Some("!="), _) => (Tok::NotEquals, 2),
                (Some("=="), _) => (Tok::DoubleEquals, 2),
                (_, b'=') => (Tok::Equals, 1),
                (_, b'!') => (Tok::DoesNotExist, 1),
                (_, b'(') => (Tok::OpenPar, 1),
                (_, b')') => (Tok::ClosedPar, 1),
                (_, b',') => (Tok::Comma, 1),
                (_, b'>') => (Tok::GreaterThan, 1),
                _ => (Tok::LessThan, 1),
            };
            items.push(Item { tok, lit: s[pos..pos + len].to_string() });
            pos += len;
            continue;
        }
        let start = pos;
        while pos < b.len() && !is_special(b[pos]) && !is_whitespace(b[pos]) {
            pos += 1;
        }
        // the boundaries are ASCII bytes, so this slice is on char boundaries
        let word = &s[start..pos];
        let tok = match word {
            "in" => Tok::In,
            "notin" => Tok::NotIn,
            _ => Tok::Identifier,
        };
        items.push(Item { tok, lit: word.to_string() });
    }
}

/// upstream `ParserContext`: in `Values`, the keywords `in`/`notin` are plain identifiers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<Item>,
    pos: usize,
}

fn syntax(msg: String) -> SelectorError {
    SelectorError::Syntax(msg)
}

fn req_err(msg: String) -> SelectorError {
    SelectorError::Requirement(msg)
}

impl Parser {
    fn item(&self, pos: usize, ctx: Ctx) -> (Tok, String) {
        // `lex` always ends with `End`, and the parser never reads past it
        let item = self.items.get(pos).or(self.items.last());
        let (tok, lit) = item.map(|i| (i.tok, i.lit.clone())).unwrap_or((Tok::End, String::new()));
        match (ctx, tok) {
            (Ctx::Values, Tok::In | Tok::NotIn) => (Tok::Identifier, lit),
            _ => (tok, lit),
        }
    }

    fn lookahead(&self, ctx: Ctx) -> (Tok, String) {
        self.item(self.pos, ctx)
    }

    fn consume(&mut self, ctx: Ctx) -> (Tok, String) {
        let it = self.item(self.pos, ctx);
        if self.pos < self.items.len() {
            self.pos += 1;
        }
        it
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Ctx::Values);
            match tok {
                Tok::Identifier | Tok::DoesNotExist => {
                    requirements.push(self.parse_requirement()?);
                    let (t, l) = self.consume(Ctx::Values);
                    match t {
                        Tok::End => return Ok(requirements),
                        Tok::Comma => {
                            let (t2, l2) = self.lookahead(Ctx::Values);
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return Err(syntax(format!("found '{l2}', expected: identifier after ','")));
                            }
                        }
                        _ => return Err(syntax(format!("found '{l}', expected: ',' or 'end of string'"))),
                    }
                }
                Tok::End => return Ok(requirements),
                _ => return Err(syntax(format!("found '{lit}', expected: !, identifier, or 'end of string'"))),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op) = op {
            return Requirement::new(key, op, Vec::new()).map_err(|e| req_err(e.to_string()));
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(key, op, values).map_err(|e| req_err(e.to_string()))
    }

    /// The key, and `Exists`/`DoesNotExist` when no binary operator follows (a `!key` is
    /// `DoesNotExist` even then; the caller then fails on the operator, as upstream).
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), SelectorError> {
        let mut op = None;
        let (mut tok, mut lit) = self.consume(Ctx::Values);
        if tok == Tok::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Ctx::Values);
        }
        if tok != Tok::Identifier {
            return Err(req_err(format!("found '{lit}', expected: identifier")));
        }
        // upstream validates the key with a nil field path, which Go prints as `<nil>`
        if let Some(e) = label_key_error(&lit, "<nil>") {
            return Err(req_err(e));
        }
        let (next, _) = self.lookahead(Ctx::Values);
        if (next == Tok::End || next == Tok::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, SelectorError> {
        let (tok, lit) = self.consume(Ctx::KeyAndOperator);
        Ok(match tok {
            Tok::In => Operator::In,
            Tok::Equals => Operator::Equals,
            Tok::DoubleEquals => Operator::DoubleEquals,
            Tok::GreaterThan => Operator::GreaterThan,
            Tok::LessThan => Operator::LessThan,
            Tok::NotIn => Operator::NotIn,
            Tok::NotEquals => Operator::NotEquals,
            _ => return Err(req_err(format!("found '{lit}', expected: in, notin, =, ==, !=, gt, lt"))),
        })
    }

    /// `( v1, v2, … )`: a sorted, deduplicated list; `()` is the single empty value.
    fn parse_values(&mut self) -> Result<Vec<String>, SelectorError> {
        let (tok, lit) = self.consume(Ctx::Values);
        if tok != Tok::OpenPar {
            return Err(req_err(format!("found '{lit}' expected: '('")));
        }
        let (tok, lit) = self.lookahead(Ctx::Values);
        match tok {
            Tok::Identifier | Tok::Comma => {
                let values = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Ctx::Values);
                if tok != Tok::ClosedPar {
                    return Err(req_err(format!("found '{lit}', expected: ')'")));
                }
                Ok(values)
            }
            Tok::ClosedPar => {
                self.consume(Ctx::Values);
                Ok(vec![String::new()])
            }
            _ => Err(req_err(format!("found '{lit}', expected: ',', ')' or identifier"))),
        }
    }

    /// Comma-separated, possibly empty identifiers up to (not including) `)`.
    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut set = std::collections::BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Ctx::Values);
            match tok {
                Tok::Identifier => {
                    set.insert(lit);
                    let (tok2, lit2) = self.lookahead(Ctx::Values);
                    match tok2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(set.into_iter().collect()),
                        _ => return Err(req_err(format!("found '{lit2}', expected: ',' or ')'"))),
                    }
                }
                Tok::Comma => {
                    // `(,`, `,,` and `,)` each stand for an empty value
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    let (tok2, _) = self.lookahead(Ctx::Values);
                    if tok2 == Tok::ClosedPar {
                        set.insert(String::new());
                        return Ok(set.into_iter().collect());
                    }
                    if tok2 == Tok::Comma {
                        set.insert(String::new());
                    }
                }
                _ => return Err(req_err(format!("found '{lit}', expected: ',', or identifier"))),
            }
        }
    }

    /// The value after `=`, `==`, `!=`, `>`, `<`; nothing before `,` or the end is `""`.
    fn parse_exact_value(&mut self) -> Result<Vec<String>, SelectorError> {
        let (tok, _) = self.lookahead(Ctx::Values);
        if tok == Tok::End || tok == Tok::Comma {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.consume(Ctx::Values);
        if tok == Tok::Identifier {
            return Ok(vec![lit]);
        }
        Err(req_err(format!("found '{lit}', expected: identifier")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("test labels are an object")
    }

    #[test]
    fn label_selector_parse_good_strings_restring_without_spaces() {
        for s in ["x=a,y=b,z=c", "", "x!=a,y=b", "x=", "x= ", "x=,z= ", "x= ,z= ", "!x", "x>1", "x>1,z<5", "x==a"] {
            let sel = Selector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(sel.to_string(), s.replace(' ', ""), "{s:?}");
        }
    }

    #[test]
    fn label_selector_parse_bad_strings_fail() {
        for s in [
            "x=a||y=b",
            "x==a==b",
            "!x=a",
            "x<a",
            "x,,y",
            ",x,y",
            "x nott in (y)",
            "a in (xyz),",
            "a in (xyz)b notin ()",
            "a in (xyz abc)",
            "a notin(",
            "a (",
            "(",
        ] {
            assert!(Selector::parse(s).is_err(), "{s:?} should not parse");
        }
    }

    #[test]
    fn label_selector_parse_errors_use_upstream_wording() {
        let cases = [
            ("x,,y", "found ',', expected: identifier after ','"),
            ("(", "found '(', expected: !, identifier, or 'end of string'"),
            ("x=a b", "found 'b', expected: ',' or 'end of string'"),
            ("!x=a", "found '=', expected: ',' or 'end of string'"),
            ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
            ("a in (x", "unable to parse requirement: found '', expected: ',' or ')'"),
            ("a in x", "unable to parse requirement: found 'x' expected: '('"),
            ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
            ("a in (x,=)", "unable to parse requirement: found '=', expected: ',', or identifier"),
            ("a=(", "unable to parse requirement: found '(', expected: identifier"),
            ("!", "unable to parse requirement: found '', expected: identifier"),
            (
                "x<a",
                "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer",
            ),
            (
                "Foo_=bar",
                "unable to parse requirement: <nil>: Invalid value: \"Foo_\": name part must consist of alphanumeric \
                 characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or \
                 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ),
            (
                "a=b_",
                "unable to parse requirement: values[0][a]: Invalid value: \"b_\": a valid label must be an empty string \
                 or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
                 character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is \
                 '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ),
        ];
        for (input, want) in cases {
            let err = Selector::parse(input).expect_err(input);
            assert_eq!(err.to_string(), want, "{input:?}");
        }
    }

    #[test]
    fn label_selector_set_based_roundtrip() {
        let cases = [
            ("x notin (abc,,def),bar,z in (),w", "bar,w,x notin (,abc,def),z in ()"),
            ("x in (abc,)", "x in (,abc)"),
            ("x notin (, a)", "x notin (,a)"),
            ("x notin ( )", "x notin ()"),
            (
                "this-is-another-dns.domain.com/key-with-dash in (so,what)",
                "this-is-another-dns.domain.com/key-with-dash in (so,what)",
            ),
            (
                "0.1.2.domain/99 notin (10.10.100.1, tick.tack.clock)",
                "0.1.2.domain/99 notin (10.10.100.1,tick.tack.clock)",
            ),
            ("z in (b,a),a=1", "a=1,z in (a,b)"),
            ("a in (x,y,notin, z,in)", "a in (in,notin,x,y,z)"),
            ("in in (in)", "in in (in)"),
        ];
        for (input, want) in cases {
            let sel = Selector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(sel.to_string(), want, "{input:?}");
            let again = Selector::parse(&sel.to_string()).expect("canonical form parses");
            assert_eq!(again, sel, "{input:?} does not survive a round trip");
        }
    }

    #[test]
    fn label_selector_whitespace_tolerant() {
        for (input, want) in [
            ("foo  in\t (abc)", "foo in (abc)"),
            ("x notin\n (abc)", "x notin (abc)"),
            ("x  notin\t\t\t(abc,def)", "x notin (abc,def)"),
            ("\rx", "x"),
            ("a ", "a"),
            (" a = b , ! c ", "a=b,!c"),
        ] {
            assert_eq!(Selector::parse(input).expect(input).to_string(), want, "{input:?}");
        }
    }

    #[test]
    fn label_selector_matching_table() {
        let cases = [
            ("", json!({}), true),
            ("x=foo", json!({"x": "foo"}), true),
            ("x==foo", json!({"x": "foo"}), true),
            ("x=foo", json!({"x": "bar"}), false),
            ("x=foo", json!({}), false),
            ("x!=foo", json!({"x": "bar"}), true),
            ("x!=foo", json!({"x": "foo"}), false),
            ("x in (foo,bar)", json!({"x": "bar"}), true),
            ("x in (foo,bar)", json!({}), false),
            ("x in ()", json!({"y": "baz"}), false),
            ("x in ()", json!({"x": ""}), true),
            ("x notin (foo)", json!({"x": "foo"}), false),
            ("x notin (foo)", json!({"x": "bar"}), true),
            ("x", json!({"x": ""}), true),
            ("x", json!({"y": "1"}), false),
            ("!x", json!({"y": "1"}), true),
            ("!x", json!({"x": ""}), false),
            ("x=foo,y=bar", json!({"x": "foo", "y": "bar", "z": "q"}), true),
            ("x=foo,y=bar", json!({"x": "foo"}), false),
            ("z>1", json!({"z": "2"}), true),
            ("z>1", json!({"z": "v2"}), false),
            ("z<1", json!({"z": "0"}), true),
            ("z<1", json!({}), false),
        ];
        for (sel, set, want) in cases {
            let s = Selector::parse(sel).expect(sel);
            assert_eq!(s.matches(&labels(set.clone())), want, "{sel:?} on {set}");
            assert_eq!(s.matches(&set), want, "{sel:?} on Value {set}");
        }
    }

    #[test]
    fn label_selector_notin_matches_missing_key() {
        let s = Selector::parse("env notin (prod)").expect("parses");
        assert!(s.matches(&BTreeMap::<String, String>::new()));
        let mut m = HashMap::new();
        m.insert("env".to_string(), "prod".to_string());
        assert!(!s.matches(&m));
    }

    #[test]
    fn label_selector_non_string_label_values_count_as_absent() {
        let s = Selector::parse("a").expect("parses");
        assert!(!s.matches(&labels(json!({"a": 1}))));
        assert!(Selector::parse("!a").expect("parses").matches(&labels(json!({"a": null}))));
    }

    #[test]
    fn label_selector_from_label_selector_table() {
        let cases = [
            (json!({"matchLabels": {"app": "web"}}), "app=web"),
            (json!({"matchLabels": {"tier": "fe", "app": "web"}}), "app=web,tier=fe"),
            (
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                    {"key": "env", "operator": "NotIn", "values": ["prod"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                    {"key": "track", "operator": "Exists", "values": []},
                ]}),
                "app=web,!canary,env notin (prod),tier in (be,fe),track",
            ),
            (json!({}), ""),
            (json!({"matchLabels": null, "matchExpressions": []}), ""),
        ];
        for (input, want) in cases {
            let sel = Selector::from_label_selector(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(sel.to_string(), want, "{input}");
            assert!(!sel.matches_nothing());
        }
        let sel = Selector::from_label_selector(&json!({"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["fe", "be"]}]}))
        .expect("valid");
        assert!(sel.matches(&json!({"tier": "be"})));
        assert!(!sel.matches(&json!({"tier": "db"})));
    }

    #[test]
    fn label_selector_null_label_selector_matches_nothing() {
        let nothing = Selector::from_label_selector(&Value::Null).expect("null is valid");
        assert!(nothing.matches_nothing());
        assert!(!nothing.is_empty());
        assert!(!nothing.matches(&json!({})));
        assert_eq!(nothing.to_string(), "");
        let everything = Selector::from_label_selector(&json!({})).expect("empty is valid");
        assert!(everything.is_empty());
        assert!(everything.matches(&json!({"any": "thing"})));
    }

    #[test]
    fn label_selector_from_label_selector_errors_use_upstream_wording() {
        let cases = [
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
                "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]}),
                "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x", "y"]}]}),
                "values: Invalid value: []string{\"x\", \"y\"}: values set must be empty for exists and does not exist",
            ),
            (json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}), "\"Gt\" is not a valid pod selector operator"),
            (
                json!({"matchLabels": {"a": "b_"}}),
                "values[0][a]: Invalid value: \"b_\": a valid label must be an empty string or consist of alphanumeric \
                 characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  \
                 or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ),
            (json!({"matchLabels": {"a": 1}}), "invalid label selector: matchLabels[a] must be a string"),
            (json!("app=web"), "invalid label selector: must be an object"),
        ];
        for (input, want) in cases {
            let err = Selector::from_label_selector(&input).expect_err(&input.to_string());
            assert_eq!(err.to_string(), want, "{input}");
        }
    }

    #[test]
    fn label_selector_requirement_errors_aggregate_in_brackets() {
        let err = Requirement::new("", Operator::In, Vec::new()).expect_err("empty key and no values");
        let msg = err.to_string();
        assert!(
            msg.starts_with("[key: Invalid value: \"\": name part must be non-empty; name part must consist of"),
            "{msg}"
        );
        assert!(
            msg.ends_with(
                ", values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty]"
            ),
            "{msg}"
        );
    }

    #[test]
    fn label_selector_requires_exact_match() {
        let s = Selector::parse("a=1,b in (2),c in (3,4),d!=5").expect("parses");
        assert_eq!(s.requires_exact_match("a"), Some("1"));
        assert_eq!(s.requires_exact_match("b"), Some("2"));
        assert_eq!(s.requires_exact_match("c"), None);
        assert_eq!(s.requires_exact_match("d"), None);
        assert_eq!(s.requires_exact_match("e"), None);
    }

    #[test]
    fn label_selector_from_set_and_add_keep_keys_sorted() {
        let s = Selector::from_set([("b", "2"), ("a", "1")]);
        assert_eq!(s.to_string(), "a=1,b=2");
        let r = Requirement::new("aa", Operator::Exists, Vec::new()).expect("valid");
        assert_eq!(s.with_requirement(r).to_string(), "a=1,aa,b=2");
        assert!(Selector::from_set(Vec::<(String, String)>::new()).is_empty());
    }

    #[test]
    fn label_selector_parse_sorts_by_key_deterministically() {
        let a = Selector::parse("x=a,a=x").expect("parses");
        let b = Selector::parse("a=x,x=a").expect("parses");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "a=x,x=a");
        assert_eq!("a=x,x=a".parse::<Selector>().expect("parses"), a);
    }
}
