//! Engine `tree-sitter`: a fast, error-tolerant parse. ERROR and MISSING nodes become
//! diagnostics. It knows the grammar only (no compile-time checks, no target version), so it
//! accepts much that CPython rejects; its tree is good for structural questions such as the
//! entrypoint check.

use std::cell::RefCell;

use tree_sitter::{Node, Parser, Tree};

use crate::entrypoint::{EntrypointSpec, Signature};
use crate::RawDiagnostic;

/// Diagnostics reported per file at most; a garbage file would otherwise list thousands.
const MAX_DIAGNOSTICS: usize = 50;

thread_local! {
    /// Parsers are reusable and cheap to keep; building one per file costs more than a parse.
    static PARSER: RefCell<Option<Parser>> = const { RefCell::new(None) };
}

fn parse(source: &str) -> Result<Tree, String> {
    PARSER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let mut parser = Parser::new();
            parser
                .set_language(&tree_sitter_python::LANGUAGE.into())
                .map_err(|e| format!("tree-sitter cannot load the Python grammar: {e}"))?;
            *slot = Some(parser);
        }
        let parser = slot
            .as_mut()
            .ok_or_else(|| "tree-sitter parser unavailable".to_owned())?;
        parser.reset();
        parser
            .parse(source, None)
            .ok_or_else(|| "tree-sitter did not produce a tree".to_owned())
    })
}

pub(crate) fn check(source: &str, entrypoint: Option<&EntrypointSpec>) -> Vec<RawDiagnostic> {
    let tree = match parse(source) {
        Ok(tree) => tree,
        Err(message) => return vec![RawDiagnostic::at(0, message)],
    };
    let root = tree.root_node();
    let mut diagnostics = Vec::new();
    if root.has_error() {
        collect_errors(root, &mut diagnostics);
    }
    if diagnostics.is_empty() {
        if let Some(spec) = entrypoint {
            if let Err(message) = spec.check(find_entrypoint(root, source, &spec.name)) {
                diagnostics.push(RawDiagnostic::at(0, message));
            }
        }
    }
    diagnostics
}

/// Pre-order walk with an explicit cursor (no recursion: deep trees must not overflow).
fn collect_errors(root: Node<'_>, out: &mut Vec<RawDiagnostic>) {
    let mut cursor = root.walk();
    loop {
        let node = cursor.node();
        let mut descend = node.has_error();
        if node.is_error() {
            out.push(RawDiagnostic::at(node.start_byte(), "invalid syntax"));
            descend = false;
        } else if node.is_missing() {
            out.push(RawDiagnostic::at(
                node.start_byte(),
                format!("invalid syntax: missing '{}'", node.kind()),
            ));
        }
        if out.len() >= MAX_DIAGNOSTICS {
            return;
        }
        if descend && cursor.goto_first_child() {
            continue;
        }
        loop {
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return;
            }
        }
    }
}

/// The last module-level `def NAME` (also inside module-level `if`/`try`/`with` blocks).
fn find_entrypoint(root: Node<'_>, source: &str, name: &str) -> Option<Signature> {
    let mut found = None;
    search_block(root, source, name, &mut found);
    found
}

fn search_block(block: Node<'_>, source: &str, name: &str, found: &mut Option<Signature>) {
    let mut cursor = block.walk();
    for child in block.named_children(&mut cursor) {
        match child.kind() {
            "function_definition" => consider_function(child, source, name, found),
            "decorated_definition" => {
                if let Some(def) = child.child_by_field_name("definition") {
                    if def.kind() == "function_definition" {
                        consider_function(def, source, name, found);
                    }
                }
            }
            "if_statement" | "try_statement" | "with_statement" | "elif_clause" | "else_clause"
            | "except_clause" | "finally_clause" | "block" => {
                search_block(child, source, name, found);
            }
            _ => {}
        }
    }
}

fn consider_function(def: Node<'_>, source: &str, name: &str, found: &mut Option<Signature>) {
    let Some(def_name) = def.child_by_field_name("name") else {
        return;
    };
    if source.get(def_name.byte_range()) != Some(name) {
        return;
    }
    let mut signature = Signature {
        is_async: def.child(0).is_some_and(|first| first.kind() == "async"),
        ..Signature::default()
    };
    let Some(parameters) = def.child_by_field_name("parameters") else {
        *found = Some(signature);
        return;
    };
    let mut keyword_only = false;
    let mut cursor = parameters.walk();
    for param in parameters.named_children(&mut cursor) {
        let (is_default, inner) = match param.kind() {
            "default_parameter" | "typed_default_parameter" => (true, param),
            "typed_parameter" => (false, param.named_child(0).unwrap_or(param)),
            _ => (false, param),
        };
        match inner.kind() {
            "list_splat_pattern" => {
                signature.has_varargs = true;
                keyword_only = true;
            }
            "keyword_separator" => keyword_only = true,
            "dictionary_splat_pattern" | "positional_separator" | "comment" => {}
            _ if keyword_only => {
                if !is_default {
                    signature.required_keyword_only += 1;
                }
            }
            _ => {
                signature.total_positional += 1;
                if !is_default {
                    signature.required_positional += 1;
                }
            }
        }
    }
    *found = Some(signature);
}
