//! The compile-time checks CPython makes that ruff's [`SemanticSyntaxChecker`] leaves to
//! ruff's linter.
//!
//! [`SemanticSyntaxChecker`]: ruff_python_parser::semantic_errors::SemanticSyntaxChecker

use ruff_python_ast::{self as ast, Expr, Stmt};
use ruff_text_size::{Ranged, TextSize};

use super::SemanticVisitor;
use crate::ruff_engine::scopes::ScopeKind;
use crate::RawDiagnostic;

impl<'a> SemanticVisitor<'a> {
    pub(super) fn check_try(&mut self, stmt: &'a ast::StmtTry) {
        let count = stmt.handlers.len();
        for (index, handler) in stmt.handlers.iter().enumerate() {
            let ast::ExceptHandler::ExceptHandler(h) = handler;
            if h.type_.is_none() && index + 1 < count {
                self.extra.push(RawDiagnostic::new(
                    h.range.start(),
                    "default 'except:' must be last",
                ));
            }
        }
    }

    pub(super) fn check_except_star_exit(&mut self, stmt: &'a Stmt) {
        let Some(scope) = self.scopes.last() else {
            return;
        };
        if !scope.in_except_star {
            return;
        }
        let leaves = match stmt {
            Stmt::Return(_) => true,
            Stmt::Break(_) | Stmt::Continue(_) => scope.loop_depth == scope.except_star_loop_depth,
            _ => false,
        };
        if leaves {
            self.extra.push(RawDiagnostic::new(
                stmt.start(),
                "'break', 'continue' and 'return' cannot appear in an except* block",
            ));
        }
    }

    /// f-string rules of CPython's own f-string parser: no starred replacement field, and
    /// before 3.12 at most two levels of replacement fields in format specs.
    pub(super) fn check_f_string_elements(
        &mut self,
        elements: &'a ast::InterpolatedStringElements,
        level: usize,
    ) {
        for element in elements {
            let ast::InterpolatedStringElement::Interpolation(field) = element else {
                continue;
            };
            if field.expression.is_starred_expr() {
                self.extra.push(RawDiagnostic::new(
                    field.expression.start(),
                    "f-string: cannot use starred expression here",
                ));
            }
            if level > 2 && self.python_version < ast::PythonVersion::PY312 {
                self.extra.push(RawDiagnostic::new(
                    field.range.start(),
                    "f-string: expressions nested too deeply",
                ));
                return;
            }
            if let Some(spec) = &field.format_spec {
                self.check_f_string_elements(&spec.elements, level + 1);
            }
        }
    }

    /// Names bound by `def`, `class` and `except … as` before a `global` or `nonlocal`
    /// declaration of the same scope (plain names are the checker's business). CPython
    /// exempts imports.
    pub(super) fn check_identifier_bindings(&mut self, stmt: &'a Stmt) {
        if !self.scan_declarations {
            return;
        }
        let mut bound: Vec<(&str, TextSize)> = Vec::new();
        match stmt {
            Stmt::FunctionDef(s) => bound.push((s.name.as_str(), s.name.range.start())),
            Stmt::ClassDef(s) => bound.push((s.name.as_str(), s.name.range.start())),
            Stmt::Try(s) => {
                for handler in &s.handlers {
                    let ast::ExceptHandler::ExceptHandler(h) = handler;
                    if let Some(name) = &h.name {
                        bound.push((name.as_str(), name.range.start()));
                    }
                }
            }
            _ => return,
        }
        self.report_bound_before_declaration(bound);
    }

    pub(super) fn report_bound_before_declaration(&mut self, bound: Vec<(&str, TextSize)>) {
        // Comprehensions bind walrus targets in the enclosing scope.
        let Some(scope) = self
            .scopes
            .iter()
            .rev()
            .find(|s| !matches!(s.kind, ScopeKind::Comprehension { .. }))
        else {
            return;
        };
        for (name, at) in bound {
            for (declarations, kind) in [(&scope.globals, "global"), (&scope.nonlocals, "nonlocal")]
            {
                if declarations.get(name).is_some_and(|d| at < d.start()) {
                    self.extra.push(RawDiagnostic::new(
                        at,
                        format!("name '{name}' is assigned to before {kind} declaration"),
                    ));
                }
            }
        }
    }

    /// A name declared both `nonlocal` and `global` in one scope.
    pub(super) fn check_nonlocal_and_global(&mut self, stmt: &'a ast::StmtNonlocal) {
        let Some(scope) = self.scopes.last() else {
            return;
        };
        for name in &stmt.names {
            if scope.globals.contains_key(name.as_str()) {
                self.extra.push(RawDiagnostic::new(
                    name.range.start(),
                    format!("name '{name}' is nonlocal and global"),
                ));
            }
        }
    }

    /// A walrus target in a comprehension binds in the enclosing scope, maybe before its
    /// declaration there.
    pub(super) fn check_named_target(&mut self, named: &'a ast::ExprNamed) {
        if let (Expr::Name(target), Some(ScopeKind::Comprehension { .. })) =
            (named.target.as_ref(), self.scope().map(|s| s.kind))
        {
            self.report_bound_before_declaration(vec![(target.id.as_str(), target.range.start())]);
        }
    }

    pub(super) fn check_name(&mut self, name: &'a ast::ExprName) {
        let Some(scope) = self.scopes.last() else {
            return;
        };
        if !matches!(scope.kind, ScopeKind::Function { .. }) || scope.nonlocals.is_empty() {
            return;
        }
        if let Some(declared) = scope.nonlocals.get(name.id.as_str()) {
            if name.range.start() < declared.start() {
                let verb = if name.ctx.is_load() {
                    "used"
                } else {
                    "assigned to"
                };
                self.extra.push(RawDiagnostic::new(
                    name.range.start(),
                    format!("name '{}' is {verb} prior to nonlocal declaration", name.id),
                ));
            }
        }
    }
}
