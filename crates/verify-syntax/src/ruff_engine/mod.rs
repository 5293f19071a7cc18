//! Engine `ruff`: ruff's error-recovering parser, its version-aware "unsupported syntax" errors,
//! its [`SemanticSyntaxChecker`] driven by our own scope tracking, plus the few compile-time
//! checks CPython makes that ruff's crate leaves to its linter.
//!
//! [`check`] runs the stages in CPython's order: the tokenizer's limits ([`tokens`]), the
//! parser's errors (reworded by [`messages`]), the compiler's recursion limit ([`depth`]), then,
//! on a clean parse only, the compile-time checks ([`semantic`], over the scopes of
//! [`scopes`]) and the entrypoint's signature ([`signature`]).
//!
//! [`SemanticSyntaxChecker`]: ruff_python_parser::semantic_errors::SemanticSyntaxChecker

mod depth;
mod messages;
mod scopes;
mod semantic;
mod signature;
mod tokens;

use ruff_python_ast::visitor::Visitor;
use ruff_python_ast::{self as ast, ModModule};
use ruff_python_parser::{Mode, ParseOptions, Parsed};
use ruff_text_size::TextSize;

use crate::entrypoint::EntrypointSpec;
use crate::RawDiagnostic;

impl RawDiagnostic {
    fn new(offset: TextSize, message: impl Into<String>) -> Self {
        Self::at(offset.to_usize(), message)
    }
}

/// Parses `source` and returns every error CPython would raise at compile time (as far as we
/// know them), in source order.
pub(crate) fn check(
    source: &str,
    python_version: ast::PythonVersion,
    entrypoint: Option<&EntrypointSpec>,
) -> Vec<RawDiagnostic> {
    let options = ParseOptions::from(Mode::Module).with_target_version(python_version);
    let parsed = ruff_python_parser::parse_unchecked(source, options);
    let mut diagnostics = parse_diagnostics(source, &parsed);
    let facts = tokens::check_token_limits(&parsed, &mut diagnostics);
    let token_count = parsed.tokens().len();
    let Some(module) = parsed.try_into_module() else {
        return diagnostics;
    };
    // Only a walk finds the real depth; the token bound spares it to nearly every file.
    let too_deep = if facts.depth_bound > depth::MAX_AST_DEPTH {
        depth::first_node_too_deep(&module.syntax().body)
    } else {
        None
    };
    if let Some(offset) = too_deep {
        diagnostics.push(RawDiagnostic::new(
            offset,
            "too complex: maximum recursion depth exceeded during compilation",
        ));
        diagnostics.sort_by_key(|d| d.offset);
        depth::drop_deep_tree(module, token_count);
        return diagnostics;
    }
    // A recovered tree after a parse error yields mostly noise; CPython stops at the first error.
    if diagnostics.is_empty() {
        let tree = module.syntax();
        diagnostics.extend(compile_diagnostics(source, python_version, &facts, tree));
        if let Some(spec) = entrypoint {
            if let Err(message) = spec.check(signature::find_entrypoint(tree, &spec.name)) {
                diagnostics.push(RawDiagnostic::new(TextSize::default(), message));
            }
        }
    }
    diagnostics.sort_by_key(|d| d.offset);
    diagnostics
}

/// The tokenizer's `TabError`, then the parser's errors before it and ruff's version-aware
/// "unsupported syntax" errors.
fn parse_diagnostics(source: &str, parsed: &Parsed<ast::Mod>) -> Vec<RawDiagnostic> {
    let mut diagnostics: Vec<RawDiagnostic> = Vec::new();
    // CPython's tokenizer raises TabError before the parser sees the line; what ruff reports
    // from that point on are consequences.
    tokens::check_tab_consistency(source, parsed, &mut diagnostics);
    let tab_error_at = diagnostics.first().map(|d| d.offset);
    diagnostics.extend(
        parsed
            .errors()
            .iter()
            .filter(|error| tab_error_at.is_none_or(|at| error.location.start().to_usize() < at))
            .map(|error| {
                RawDiagnostic::new(
                    error.location.start(),
                    messages::parse_message(error, source),
                )
            }),
    );
    diagnostics.extend(
        parsed
            .unsupported_syntax_errors()
            .iter()
            .map(|error| RawDiagnostic::new(error.range.start(), error.to_string())),
    );
    diagnostics
}

/// The compile-time checks of CPython's symbol table and compiler, over a clean parse.
fn compile_diagnostics(
    source: &str,
    python_version: ast::PythonVersion,
    facts: &tokens::TokenFacts,
    module: &ModModule,
) -> Vec<RawDiagnostic> {
    let mut visitor = semantic::SemanticVisitor::new(
        source,
        python_version,
        facts.has_declarations,
        facts.has_nonlocal,
    );
    visitor.visit_body(&module.body);
    visitor.into_diagnostics()
}
