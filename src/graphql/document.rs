//! A GraphQL document before async-graphql sees it: bounds on its shape that
//! are checked in time linear in its text, and `-0` read as the Int 0.
//!
//! async-graphql's own checks (recursion depth, directives, complexity, and
//! several validation rules) walk fragment spreads without remembering what
//! they have already walked, so a 1 KB document whose fragments each spread
//! the next one twice costs 2^N steps. Everything here visits each fragment
//! once and stops the moment a limit is passed.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_graphql::parser::types::{Directive, ExecutableDocument, Field, Selection, SelectionSet};
use async_graphql::{Name, Number, Positioned};
use async_graphql_value::{ConstValue, Value};
use tokio::sync::Semaphore;

/// Deepest nesting of `{`, `(` and `[` in the text. The parser recurses on
/// each level, and list values have no depth limit of their own there.
pub const MAX_NESTING: usize = 64;
/// Most selections (fields, fragment spreads, inline fragments) a document
/// may make once every fragment spread is replaced by the fragment; the
/// introspection query GraphiQL and codegen send makes about 200.
pub const MAX_SELECTIONS: usize = 1000;
/// Deepest selection nesting once fragments are expanded, counting fields
/// with selections, spreads and inline fragments, as async-graphql's
/// recursion limit counts them.
pub const MAX_DEPTH: usize = 32;
/// Most operations in one document; a client sends one at a time.
pub const MAX_OPERATIONS: usize = 50;
/// Most fragment definitions in one document.
pub const MAX_FRAGMENTS: usize = 100;
/// Most directives on one field, fragment, operation or variable.
pub const MAX_DIRECTIVES: usize = 8;
/// Most arguments on one field or directive.
pub const MAX_ARGUMENTS: usize = 16;
/// Most variables one operation declares.
pub const MAX_VARIABLES: usize = 64;

/// The limit a document passed; the message says which, and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error(
        "The document nests brackets more than {MAX_NESTING} levels deep; flatten the query or \
         its argument values."
    )]
    Nesting,
    #[error(
        "The document makes more than {MAX_SELECTIONS} selections once its fragments are \
         expanded; ask for fewer fields or split the query."
    )]
    Selections,
    #[error(
        "The document nests selections more than {MAX_DEPTH} levels deep once its fragments are \
         expanded."
    )]
    Depth,
    #[error("Fragment `{0}` spreads itself, directly or through other fragments.")]
    FragmentCycle(String),
    #[error("The document holds more than {MAX_OPERATIONS} operations; send one per request.")]
    Operations,
    #[error("The document defines more than {MAX_FRAGMENTS} fragments.")]
    Fragments,
    #[error(
        "A field, fragment, operation or variable carries more than {MAX_DIRECTIVES} directives."
    )]
    Directives,
    #[error("A field or directive has more than {MAX_ARGUMENTS} arguments.")]
    Arguments,
    #[error("An operation declares more than {MAX_VARIABLES} variables.")]
    Variables,
}

/// Documents up to this size are parsed where the request runs; larger ones
/// (a real operation is well under it) on the blocking pool, so that a flood
/// of them never holds up the async workers that answer everything else.
const INLINE_PARSE_BYTES: usize = 4 * 1024;

/// How many large documents are parsed at once: one per core, so the async
/// workers keep their share of the processor.
static LARGE_DOCUMENT_PARSERS: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(std::thread::available_parallelism().map_or(2, |cores| cores.get()))
});

/// The parsed document, ready to execute: within every limit, with `-0` read
/// as 0. `None` when the text is not valid GraphQL, which async-graphql then
/// reports with the place it fails.
pub type Prepared = Result<Option<ExecutableDocument>, LimitExceeded>;

/// Parses and checks `text`, giving it back with the outcome.
pub async fn prepare(text: String) -> (String, Prepared) {
    if text.len() <= INLINE_PARSE_BYTES {
        let prepared = prepare_now(&text);
        return (text, prepared);
    }
    // The semaphore is never closed, so a permit always comes.
    let _permit = LARGE_DOCUMENT_PARSERS.acquire().await.ok();
    let prepare = move || {
        let prepared = prepare_now(&text);
        (text, prepared)
    };
    match tokio::task::spawn_blocking(prepare).await {
        Ok(done) => done,
        // A panic in the parser surfaces here, where the panic layer answers it.
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

fn prepare_now(text: &str) -> Prepared {
    check_nesting(text)?;
    let Ok(mut document) = async_graphql::parser::parse_query(text) else {
        return Ok(None);
    };
    check_limits(&document)?;
    read_negative_zero_as_zero(&mut document);
    Ok(Some(document))
}

/// Refuses a query text that nests `{`, `(` or `[` deeper than `MAX_NESTING`,
/// before the parser recurses into it. Brackets inside strings and comments
/// do not count.
pub fn check_nesting(text: &str) -> Result<(), LimitExceeded> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'{' | b'(' | b'[' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(LimitExceeded::Nesting);
                }
            }
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            b'#' => {
                while index < bytes.len() && !matches!(bytes[index], b'\n' | b'\r') {
                    index += 1;
                }
            }
            b'"' if bytes[index..].starts_with(b"\"\"\"") => {
                index = block_string_end(bytes, index + 3);
                continue;
            }
            b'"' => {
                index += 1;
                while index < bytes.len() && !matches!(bytes[index], b'"' | b'\n' | b'\r') {
                    // An escape hides the character after it, a quote included.
                    index += if bytes[index] == b'\\' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        index += 1;
    }
    Ok(())
}

/// The index just past the `"""` that closes a block string whose text starts
/// at `index`; only `\"""` escapes inside it.
fn block_string_end(bytes: &[u8], mut index: usize) -> usize {
    while index < bytes.len() {
        if bytes[index..].starts_with(b"\\\"\"\"") {
            index += 4;
        } else if bytes[index..].starts_with(b"\"\"\"") {
            return index + 3;
        } else {
            index += 1;
        }
    }
    index
}

/// Checks every bound on a parsed document, visiting each fragment once.
pub fn check_limits(document: &ExecutableDocument) -> Result<(), LimitExceeded> {
    if document.operations.iter().len() > MAX_OPERATIONS {
        return Err(LimitExceeded::Operations);
    }
    if document.fragments.len() > MAX_FRAGMENTS {
        return Err(LimitExceeded::Fragments);
    }
    let mut expansion = Expansion {
        document,
        fragments: HashMap::with_capacity(document.fragments.len()),
    };
    let mut selections = 0usize;
    for (_, operation) in document.operations.iter() {
        let operation = &operation.node;
        if operation.variable_definitions.len() > MAX_VARIABLES {
            return Err(LimitExceeded::Variables);
        }
        for variable in &operation.variable_definitions {
            check_directives(&variable.node.directives)?;
        }
        check_directives(&operation.directives)?;
        let extent = expansion.selection_set(&operation.selection_set.node, 1)?;
        selections = selections.saturating_add(extent.selections);
        if selections > MAX_SELECTIONS {
            return Err(LimitExceeded::Selections);
        }
    }
    // Fragments no operation spreads are still validated, and may hold cycles.
    for name in document.fragments.keys() {
        expansion.fragment(name, 1)?;
    }
    Ok(())
}

/// How much a selection set or fragment expands to.
#[derive(Debug, Clone, Copy, Default)]
struct Extent {
    selections: usize,
    /// Levels below the set itself, the set counting as one.
    depth: usize,
}

/// The expanded extent of each fragment, worked out once; `None` while the
/// fragment is being expanded, so that meeting it again is a cycle.
struct Expansion<'a> {
    document: &'a ExecutableDocument,
    fragments: HashMap<&'a Name, Option<Extent>>,
}

impl<'a> Expansion<'a> {
    /// The extent of `set`, found at `depth`. Any bound passed stops the walk.
    fn selection_set(
        &mut self,
        set: &'a SelectionSet,
        depth: usize,
    ) -> Result<Extent, LimitExceeded> {
        if depth > MAX_DEPTH {
            return Err(LimitExceeded::Depth);
        }
        let mut extent = Extent {
            selections: 0,
            depth: 1,
        };
        for selection in &set.items {
            check_directives(selection.node.directives())?;
            let inner = match &selection.node {
                Selection::Field(field) => self.field(&field.node, depth)?,
                Selection::InlineFragment(inline) => {
                    self.selection_set(&inline.node.selection_set.node, depth + 1)?
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(&spread.node.fragment_name.node, depth + 1)?
                }
            };
            extent.selections = extent.selections.saturating_add(1 + inner.selections);
            extent.depth = extent.depth.max(1 + inner.depth);
            if extent.selections > MAX_SELECTIONS {
                return Err(LimitExceeded::Selections);
            }
        }
        Ok(extent)
    }

    fn field(&mut self, field: &'a Field, depth: usize) -> Result<Extent, LimitExceeded> {
        if field.arguments.len() > MAX_ARGUMENTS {
            return Err(LimitExceeded::Arguments);
        }
        if field.selection_set.node.items.is_empty() {
            return Ok(Extent::default());
        }
        self.selection_set(&field.selection_set.node, depth + 1)
    }

    /// The extent of the fragment `name`, spread at `depth`. An unknown
    /// fragment expands to nothing here; validation reports it.
    fn fragment(&mut self, name: &'a Name, depth: usize) -> Result<Extent, LimitExceeded> {
        match self.fragments.get(name) {
            Some(Some(extent)) if depth + extent.depth > MAX_DEPTH + 1 => Err(LimitExceeded::Depth),
            Some(Some(extent)) => Ok(*extent),
            Some(None) => Err(LimitExceeded::FragmentCycle(name.to_string())),
            None => {
                let Some((name, definition)) = self.document.fragments.get_key_value(name) else {
                    return Ok(Extent::default());
                };
                check_directives(&definition.node.directives)?;
                self.fragments.insert(name, None);
                let extent = self.selection_set(&definition.node.selection_set.node, depth)?;
                self.fragments.insert(name, Some(extent));
                Ok(extent)
            }
        }
    }
}

fn check_directives(directives: &[Positioned<Directive>]) -> Result<(), LimitExceeded> {
    if directives.len() > MAX_DIRECTIVES {
        return Err(LimitExceeded::Directives);
    }
    if directives
        .iter()
        .any(|directive| directive.node.arguments.len() > MAX_ARGUMENTS)
    {
        return Err(LimitExceeded::Arguments);
    }
    Ok(())
}

/// Reads every `-0` in the document's argument values as the Int 0. The
/// GraphQL grammar allows `-0` as an Int, but the parser keeps it as the float
/// -0.0, which no Int argument accepts.
pub fn read_negative_zero_as_zero(document: &mut ExecutableDocument) {
    fn selection_set(set: &mut SelectionSet) {
        for selection in &mut set.items {
            directives(selection.node.directives_mut());
            match &mut selection.node {
                Selection::Field(field) => {
                    for (_, value) in &mut field.node.arguments {
                        value_zero(&mut value.node);
                    }
                    selection_set(&mut field.node.selection_set.node);
                }
                Selection::InlineFragment(inline) => {
                    selection_set(&mut inline.node.selection_set.node);
                }
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    fn directives(directives: &mut [Positioned<Directive>]) {
        for directive in directives {
            for (_, value) in &mut directive.node.arguments {
                value_zero(&mut value.node);
            }
        }
    }
    fn value_zero(value: &mut Value) {
        match value {
            Value::Number(number) => zero(number),
            Value::List(items) => items.iter_mut().for_each(value_zero),
            Value::Object(fields) => fields.values_mut().for_each(value_zero),
            _ => {}
        }
    }

    let operations: Vec<_> = match &mut document.operations {
        async_graphql::parser::types::DocumentOperations::Single(operation) => vec![operation],
        async_graphql::parser::types::DocumentOperations::Multiple(operations) => {
            operations.values_mut().collect()
        }
    };
    for operation in operations {
        let operation = &mut operation.node;
        for variable in &mut operation.variable_definitions {
            if let Some(default) = &mut variable.node.default_value {
                const_value_zero(&mut default.node);
            }
        }
        directives(&mut operation.directives);
        selection_set(&mut operation.selection_set.node);
    }
    for fragment in document.fragments.values_mut() {
        directives(&mut fragment.node.directives);
        selection_set(&mut fragment.node.selection_set.node);
    }
}

/// `read_negative_zero_as_zero` for a constant value (a variable's default).
fn const_value_zero(value: &mut ConstValue) {
    match value {
        ConstValue::Number(number) => zero(number),
        ConstValue::List(items) => items.iter_mut().for_each(const_value_zero),
        ConstValue::Object(fields) => fields.values_mut().for_each(const_value_zero),
        _ => {}
    }
}

/// Reads every `-0` in request variables as the Int 0: JSON parsers keep
/// `-0` as the float -0.0, which no Int variable accepts.
pub fn read_negative_zero_in_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(number) => zero(number),
        serde_json::Value::Array(items) => items.iter_mut().for_each(read_negative_zero_in_json),
        serde_json::Value::Object(fields) => {
            fields.values_mut().for_each(read_negative_zero_in_json);
        }
        _ => {}
    }
}

fn zero(number: &mut Number) {
    if number
        .as_f64()
        .is_some_and(|value| value == 0.0 && value.is_sign_negative())
    {
        *number = Number::from(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(text: &str) -> Result<(), LimitExceeded> {
        check_nesting(text)?;
        check_limits(&async_graphql::parser::parse_query(text).expect("a valid document"))
    }

    fn fan_out(levels: usize) -> String {
        let mut text = String::from("{ ...F0 }\n");
        for level in 0..levels {
            let next = level + 1;
            text.push_str(&format!(
                "fragment F{level} on Query {{ ...F{next} ...F{next} }}\n"
            ));
        }
        text.push_str(&format!("fragment F{levels} on Query {{ __typename }}\n"));
        text
    }

    #[test]
    fn a_fragment_fan_out_is_refused_without_expanding_it() {
        assert_eq!(limits(&fan_out(24)), Err(LimitExceeded::Selections));
        assert!(limits(&fan_out(60)).is_err());
    }

    #[test]
    fn a_small_fan_out_passes() {
        assert_eq!(limits(&fan_out(5)), Ok(()));
    }

    #[test]
    fn fragment_cycles_are_refused_even_when_no_operation_spreads_them() {
        let text = "{ __typename } fragment A on Query { ...B } fragment B on Query { ...A }";
        assert!(matches!(limits(text), Err(LimitExceeded::FragmentCycle(_))));
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let deep = "[".repeat(200);
        let text = format!("# {deep}\n{{ a(x: \"{deep}\\\"{deep}\", y: \"\"\"{deep}\"\"\") }}");
        assert_eq!(check_nesting(&text), Ok(()));
        assert_eq!(
            check_nesting(&format!("{{ a(x: {deep}) }}")),
            Err(LimitExceeded::Nesting)
        );
    }

    #[test]
    fn deep_selections_through_fragments_are_refused() {
        let mut text = String::from("{ ...F0 }\n");
        for level in 0..40 {
            text.push_str(&format!(
                "fragment F{level} on Query {{ ...F{} }}\n",
                level + 1
            ));
        }
        text.push_str("fragment F40 on Query { __typename }");
        assert_eq!(limits(&text), Err(LimitExceeded::Depth));
    }

    #[test]
    fn negative_zero_reads_as_the_int_zero() {
        let mut document =
            async_graphql::parser::parse_query("query($s: Int = -0) { a(step: -0, l: [-0]) }")
                .expect("a valid document");
        read_negative_zero_as_zero(&mut document);
        let printed = format!("{document:?}");
        assert!(!printed.contains("-0"), "{printed}");
        let mut variables = serde_json::json!({ "step": -0.0, "list": [-0.0], "one": 1.5 });
        read_negative_zero_in_json(&mut variables);
        assert_eq!(
            variables,
            serde_json::json!({ "step": 0, "list": [0], "one": 1.5 })
        );
    }
}
