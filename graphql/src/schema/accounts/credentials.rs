//! At most one credential-carrying field per operation, so one request cannot try many passwords or codes.

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, ServerError, ServerResult, Variables};
use std::collections::HashSet;
use std::sync::Arc;

/// Root fields that check a credential or send one: an operation may hold at
/// most one of them, so aliases cannot multiply guesses or messages.
pub const CREDENTIAL_FIELDS: &[&str] = &[
    "startRegistration",
    "confirmRegistration",
    "signIn",
    "completeSignIn",
    "refreshSession",
    "requestPasswordRecovery",
    "resetPassword",
    "confirmTotpEnrolment",
    "disableTotp",
    "closeMyAccount",
];

/// The extension that refuses documents with more than one credential field.
pub struct OneCredentialPerOperation;

impl ExtensionFactory for OneCredentialPerOperation {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OneCredentialPerOperation)
    }
}

pub(super) fn count_credential_fields(
    document: &ExecutableDocument,
    set: &SelectionSet,
    seen_fragments: &mut HashSet<String>,
) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => {
                usize::from(CREDENTIAL_FIELDS.contains(&field.node.name.node.as_str()))
            }
            Selection::InlineFragment(fragment) => {
                count_credential_fields(document, &fragment.node.selection_set.node, seen_fragments)
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                if !seen_fragments.insert(name.to_string()) {
                    // A fragment spread twice counts again: each spread is executed.
                    return document
                        .fragments
                        .get(name)
                        .map(|f| {
                            count_credential_fields(
                                document,
                                &f.node.selection_set.node,
                                &mut HashSet::new(),
                            )
                        })
                        .unwrap_or(0);
                }
                document
                    .fragments
                    .get(name)
                    .map(|f| {
                        count_credential_fields(
                            document,
                            &f.node.selection_set.node,
                            seen_fragments,
                        )
                    })
                    .unwrap_or(0)
            }
        })
        .sum()
}

/// How many credential fields the document's operations hold at their root.
pub fn credential_fields_in(document: &ExecutableDocument) -> usize {
    document
        .operations
        .iter()
        .map(|(_, op)| {
            count_credential_fields(document, &op.node.selection_set.node, &mut HashSet::new())
        })
        .sum()
}

#[async_graphql::async_trait::async_trait]
impl Extension for OneCredentialPerOperation {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if credential_fields_in(&document) > 1 {
            let mut error = ServerError::new(
                "one request may sign in, check a code or send a code only once: send one such field per request",
                None,
            );
            let mut extensions = ErrorExtensionValues::default();
            extensions.set("code", "TOO_MANY_CREDENTIAL_FIELDS");
            error.extensions = Some(extensions);
            return Err(error);
        }
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use super::credential_fields_in;
    use async_graphql::parser::parse_query;

    fn count(query: &str) -> usize {
        credential_fields_in(&parse_query(query).expect("parses"))
    }

    #[test]
    fn aliases_fragments_and_operations_all_count() {
        assert_eq!(count("mutation { signIn(input: {login: \"a\", password: \"b\"}) { challenge { method } } }"), 1);
        assert_eq!(
            count("mutation { a: signIn(input: {}) { x } b: signIn(input: {}) { x } }"),
            2
        );
        assert_eq!(
            count(
                "mutation { ...F ...F } fragment F on Mutation { resetPassword(input: {}) { x } }"
            ),
            2
        );
        assert_eq!(count("mutation { ... on Mutation { completeSignIn(input: {}) { x } } signIn(input: {}) { x } }"), 2);
        assert_eq!(count("mutation A { signIn(input: {}) { x } } mutation B { closeMyAccount(input: {}) { x } }"), 2);
        assert_eq!(count("{ me { role } myAccount { login } }"), 0);
    }
}
