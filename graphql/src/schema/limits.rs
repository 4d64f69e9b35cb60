//! Limits on the shape of a GraphQL document, checked before async-graphql
//! validates it, and the costs of list fields for the complexity limit.
//!
//! Validation and the depth and directive checks walk fragment spreads as if
//! they were written out, so a document of a few hundred bytes whose fragments
//! spread each other twice per level costs them millions of steps. Here every
//! fragment is measured once and its size reused, with saturating sums and an
//! early stop at the limit, so a document costs time in proportion to its
//! text, whatever it expands to.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextRequest, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Request, ServerError, ServerResult};
use async_graphql::{Response, ValidationResult};

/// Deepest nesting of fields, inline fragments and fragment spreads; the same
/// bound is given to async-graphql's own recursion check.
pub const MAX_RECURSIVE_DEPTH: usize = 32;

/// Most `__schema` and `__type` fields in one document, fragments expanded.
/// Introspection lists are not costed by the complexity limit (they describe
/// the schema, not data), and one full `__schema` is all a tool asks for; many
/// aliased copies would cost seconds of work before the response cap ends them.
pub const MAX_INTROSPECTION_FIELDS: usize = 2;

/// How large one document may be once its fragments are written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentLimits {
    /// Fields (`__typename` included) of every operation, fragments expanded.
    pub max_fields: usize,
    /// Aliased fields of every operation, fragments expanded.
    pub max_aliases: usize,
}

/// What one document holds once its fragments are written out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DocumentSize {
    pub fields: usize,
    pub aliases: usize,
    /// `__schema` and `__type` fields.
    pub introspections: usize,
}

impl DocumentSize {
    fn plus(self, other: DocumentSize) -> DocumentSize {
        DocumentSize {
            fields: self.fields.saturating_add(other.fields),
            aliases: self.aliases.saturating_add(other.aliases),
            introspections: self.introspections.saturating_add(other.introspections),
        }
    }
}

/// Why a document was refused before validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentRefusal {
    #[error("the query selects more than {limit} fields once its fragments are expanded (__typename counts too); ask for fewer fields or split the query")]
    TooManyFields { limit: usize },
    #[error("the query uses more than {limit} aliases once its fragments are expanded; send fewer aliased fields per request")]
    TooManyAliases { limit: usize },
    #[error("the query asks for the schema (__schema or __type) more than {limit} times once its fragments are expanded; ask once")]
    TooManyIntrospections { limit: usize },
    #[error("fragment '{fragment}' spreads itself, directly or through other fragments")]
    FragmentCycle { fragment: String },
    #[error("the query nests fields and fragments deeper than {limit} levels")]
    TooDeep { limit: usize },
}

impl DocumentRefusal {
    /// The stable `extensions.code` of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            DocumentRefusal::TooManyFields { .. } => "QUERY_TOO_LARGE",
            DocumentRefusal::TooManyAliases { .. } => "TOO_MANY_ALIASES",
            DocumentRefusal::TooManyIntrospections { .. } => "TOO_MANY_INTROSPECTIONS",
            DocumentRefusal::FragmentCycle { .. } => "FRAGMENT_CYCLE",
            DocumentRefusal::TooDeep { .. } => "QUERY_TOO_DEEP",
        }
    }

    fn into_server_error(self) -> ServerError {
        let mut error = ServerError::new(self.to_string(), None);
        let mut extensions = ErrorExtensionValues::default();
        extensions.set("code", self.code());
        error.extensions = Some(extensions);
        error
    }
}

/// Measures `document` against `limits`: every operation and every fragment,
/// with fragments expanded where they are spread. Stops at the first limit
/// passed, so the work is bounded by the document's text.
pub fn measure(
    document: &ExecutableDocument,
    limits: DocumentLimits,
) -> Result<DocumentSize, DocumentRefusal> {
    let mut walk = Walk {
        document,
        limits,
        measured: HashMap::new(),
        open: HashSet::new(),
    };
    let mut total = DocumentSize::default();
    for (_, operation) in document.operations.iter() {
        let size = walk.selection_set(&operation.node.selection_set.node, 1)?;
        total = walk.within_limits(total.plus(size))?;
    }
    // Fragments no operation spreads are still validated: measure them too.
    for name in document.fragments.keys() {
        walk.fragment(name.as_str(), 1)?;
    }
    Ok(total)
}

struct Walk<'a> {
    document: &'a ExecutableDocument,
    limits: DocumentLimits,
    /// Sizes of fragments already measured.
    measured: HashMap<&'a str, DocumentSize>,
    /// Fragments being measured, to find cycles.
    open: HashSet<&'a str>,
}

impl<'a> Walk<'a> {
    fn within_limits(&self, size: DocumentSize) -> Result<DocumentSize, DocumentRefusal> {
        if size.fields > self.limits.max_fields {
            return Err(DocumentRefusal::TooManyFields {
                limit: self.limits.max_fields,
            });
        }
        if size.introspections > MAX_INTROSPECTION_FIELDS {
            return Err(DocumentRefusal::TooManyIntrospections {
                limit: MAX_INTROSPECTION_FIELDS,
            });
        }
        if size.aliases > self.limits.max_aliases {
            return Err(DocumentRefusal::TooManyAliases {
                limit: self.limits.max_aliases,
            });
        }
        Ok(size)
    }

    fn selection_set(
        &mut self,
        set: &'a SelectionSet,
        depth: usize,
    ) -> Result<DocumentSize, DocumentRefusal> {
        if depth > MAX_RECURSIVE_DEPTH {
            return Err(DocumentRefusal::TooDeep {
                limit: MAX_RECURSIVE_DEPTH,
            });
        }
        let mut total = DocumentSize::default();
        for item in &set.items {
            let size = match &item.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    let own = DocumentSize {
                        fields: 1,
                        aliases: usize::from(field.node.alias.is_some()),
                        introspections: usize::from(name == "__schema" || name == "__type"),
                    };
                    if field.node.selection_set.node.items.is_empty() {
                        own
                    } else {
                        own.plus(self.selection_set(&field.node.selection_set.node, depth + 1)?)
                    }
                }
                Selection::InlineFragment(inline) => {
                    self.selection_set(&inline.node.selection_set.node, depth + 1)?
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(spread.node.fragment_name.node.as_str(), depth + 1)?
                }
            };
            total = self.within_limits(total.plus(size))?;
        }
        Ok(total)
    }

    fn fragment(&mut self, name: &'a str, depth: usize) -> Result<DocumentSize, DocumentRefusal> {
        if let Some(size) = self.measured.get(name) {
            return Ok(*size);
        }
        // An unknown fragment adds nothing here; validation names it.
        let Some(fragment) = self.document.fragments.get(name) else {
            return Ok(DocumentSize::default());
        };
        if !self.open.insert(name) {
            return Err(DocumentRefusal::FragmentCycle {
                fragment: name.to_string(),
            });
        }
        let size = self.selection_set(&fragment.node.selection_set.node, depth)?;
        self.open.remove(name);
        self.measured.insert(name, size);
        Ok(size)
    }
}

/// The extension that parses each request once and refuses a document over
/// its [`DocumentLimits`] before the depth, directive and validation checks
/// see it. It runs for HTTP requests and WebSocket subscriptions alike.
#[derive(Debug, Clone, Copy)]
pub struct DocumentLimitsCheck(pub DocumentLimits);

impl ExtensionFactory for DocumentLimitsCheck {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(*self)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for DocumentLimitsCheck {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // The parsed document stays in the request, so it is parsed only once.
        let document = request.parsed_query().map_err(|mut e| {
            with_code(&mut e, "GRAPHQL_PARSE_FAILED");
            e
        })?;
        measure(document, self.0).map_err(DocumentRefusal::into_server_error)?;
        next.run(ctx, request).await
    }
}

// --- codes of the errors async-graphql makes itself ----------------------------------------

/// Gives `error` the code `code` unless it already has one.
fn with_code(error: &mut ServerError, code: &str) {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
}

/// The code of an error async-graphql raised while checking a document, by
/// the check that raised it (its messages are the only mark it leaves).
fn checking_code(message: &str) -> &'static str {
    match message {
        "Query is too complex." => "QUERY_TOO_COMPLEX",
        "Query is too deep." => "QUERY_TOO_DEEP",
        m if m.starts_with("recursion limit") => "QUERY_TOO_DEEP",
        m if m.starts_with("The number of directives") => "TOO_MANY_DIRECTIVES",
        "Subscriptions are not supported on this transport." => "SUBSCRIPTION_NEEDS_WEBSOCKET",
        _ => "GRAPHQL_VALIDATION_FAILED",
    }
}

/// Gives every error that async-graphql raises before any resolver runs
/// (parsing, depth and directive checks, validation, complexity) a stable
/// `extensions.code`, so clients tell them apart without reading messages.
/// Errors of resolvers carry their own codes and a path; they are left alone.
#[derive(Debug, Clone, Copy)]
pub struct CheckErrorCodes;

impl ExtensionFactory for CheckErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(*self)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for CheckErrorCodes {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        for error in response.errors.iter_mut().filter(|e| e.path.is_empty()) {
            let code = checking_code(&error.message);
            with_code(error, code);
        }
        response
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|mut errors| {
            for error in &mut errors {
                let code = checking_code(&error.message);
                with_code(error, code);
            }
            errors
        })
    }
}

// --- costs of list fields for the complexity limit ------------------------------------------

/// Cost of one call of a field that verifies a signature and reads the
/// database (e.g. `verifyPrescription`): a few hundred aliased calls exceed
/// the default complexity limit.
pub const SIGNED_LOOKUP_COST: usize = 50;

/// Cost of a field that renders a PDF to give its download link.
pub const PDF_RENDER_COST: usize = 50;

/// Changes a journal of one prescription or document request is costed at:
/// each passes through a handful of states.
pub const JOURNAL_ENTRIES: usize = 16;

/// Cost of a list of at most `items` values of `child` complexity each.
pub fn list_complexity(child: usize, items: usize) -> usize {
    child.saturating_mul(items.max(1)).saturating_add(1)
}

/// The most slots one day can hold: a day of the shortest slots the schedule allows.
pub const SLOTS_PER_DAY: usize =
    (24 * 60 / kabinet_domain::directory::schedule_grid::GRID_MINUTES) as usize;

/// The most slots one `freeSlots` call returns (the resolver reads no more).
pub const FREE_SLOTS_PER_CALL: usize = 2000;

/// Cost of `freeSlots(from, to)`: the slots the range can hold (days × the
/// most slots a day holds, at most [`FREE_SLOTS_PER_CALL`]), times the fields
/// asked of each. A range the resolver refuses costs one.
pub fn free_slots_complexity(child: usize, from: &str, to: &str) -> usize {
    let parse = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    let days = match (parse(from), parse(to)) {
        (Some(from), Some(to)) if to >= from => usize::try_from((to - from).num_days())
            .unwrap_or(usize::MAX)
            .saturating_add(1),
        _ => return 1,
    };
    list_complexity(
        child,
        days.saturating_mul(SLOTS_PER_DAY).min(FREE_SLOTS_PER_CALL),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;

    const LIMITS: DocumentLimits = DocumentLimits {
        max_fields: 100,
        max_aliases: 5,
    };

    fn fragment_bomb(levels: usize) -> String {
        let mut query = format!("query {{ ...F{levels} }} fragment F0 on Query {{ __typename }}");
        for level in 1..=levels {
            let below = level - 1;
            query.push_str(&format!(
                " fragment F{level} on Query {{ ...F{below} ...F{below} }}"
            ));
        }
        query
    }

    fn measured(query: &str) -> Result<DocumentSize, DocumentRefusal> {
        measure(&parse_query(query).expect("parses"), LIMITS)
    }

    #[test]
    fn fields_are_counted_with_fragments_expanded() {
        let size =
            measured("{ a { b c } ...F ...F } fragment F on Query { x: d e { __typename } }")
                .expect("within limits");
        assert_eq!(
            size,
            DocumentSize {
                fields: 3 + 2 * 3,
                aliases: 2,
                introspections: 0,
            }
        );
    }

    #[test]
    fn a_doubling_fragment_chain_is_refused_without_expanding_it() {
        let refused = measured(&fragment_bomb(24)).expect_err("refused");
        assert_eq!(refused, DocumentRefusal::TooManyFields { limit: 100 });
        // Far past any count that could be expanded (16^20 = 2^80): the sums saturate.
        let mut wide = "query { ...W20 } fragment W0 on Query { __typename }".to_string();
        for level in 1..=20 {
            let spreads = format!("...W{} ", level - 1).repeat(16);
            wide.push_str(&format!(" fragment W{level} on Query {{ {spreads} }}"));
        }
        let huge = measure(
            &parse_query(&wide).expect("parses"),
            DocumentLimits {
                max_fields: usize::MAX - 1,
                max_aliases: usize::MAX,
            },
        );
        assert!(matches!(huge, Err(DocumentRefusal::TooManyFields { .. })));
    }

    #[test]
    fn aliases_are_limited_per_request() {
        let query: String = (0..6).map(|i| format!("a{i}: __typename ")).collect();
        assert_eq!(
            measured(&format!("{{ {query} }}")),
            Err(DocumentRefusal::TooManyAliases { limit: 5 })
        );
    }

    #[test]
    fn the_schema_may_be_asked_for_only_a_couple_of_times() {
        assert!(
            measured("{ __schema { types { name } } __type(name: \"Query\") { name } }").is_ok()
        );
        let fragment = "{ ...S } fragment S on Query { a: __schema { queryType { name } } b: __schema { queryType { name } } c: __type(name: \"Query\") { name } }";
        assert_eq!(
            measured(fragment),
            Err(DocumentRefusal::TooManyIntrospections {
                limit: MAX_INTROSPECTION_FIELDS
            })
        );
    }

    #[test]
    fn fragment_cycles_are_refused() {
        let refused =
            measured("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }")
                .expect_err("refused");
        assert_eq!(refused.code(), "FRAGMENT_CYCLE");
    }

    #[test]
    fn unused_fragments_count_against_the_limits() {
        let unused: String = (0..101).map(|i| format!("f{i} ")).collect();
        let refused = measured(&format!("{{ a }} fragment U on Query {{ {unused} }}"));
        assert_eq!(refused, Err(DocumentRefusal::TooManyFields { limit: 100 }));
    }

    #[test]
    fn free_slots_cost_grows_with_the_range() {
        assert_eq!(SLOTS_PER_DAY, 288);
        assert_eq!(
            free_slots_complexity(3, "2026-01-01", "2026-01-01"),
            3 * 288 + 1
        );
        assert_eq!(
            free_slots_complexity(3, "2026-01-01", "2026-01-31"),
            3 * 2000 + 1
        );
        assert_eq!(free_slots_complexity(3, "2026-01-02", "2026-01-01"), 1);
        assert_eq!(free_slots_complexity(3, "garbage", "2026-01-01"), 1);
    }
}
