//! Symbol queries: what the current position's scopes tell ruff's checker (async, loop,
//! generator context, `global` and `nonlocal` resolution).

use ruff_python_ast as ast;
use ruff_python_parser::semantic_errors::{
    LazyImportContext, SemanticSyntaxContext, SemanticSyntaxError,
};
use ruff_text_size::TextRange;

use super::SemanticVisitor;
use crate::ruff_engine::scopes::ScopeKind;

impl SemanticVisitor<'_> {
    /// The comprehensions the current position is nested in, innermost first, up to the
    /// first scope that is not one.
    fn enclosing_comprehensions(&self) -> impl Iterator<Item = ScopeKind> + '_ {
        self.scopes
            .iter()
            .rev()
            .map(|s| s.kind)
            .take_while(|kind| matches!(kind, ScopeKind::Comprehension { .. }))
    }

    /// Which scope binds a name for `nonlocal`: an enclosing function, classes skipped.
    fn enclosing_function_binds(&self, name: &str) -> bool {
        for scope in self.scopes.iter().rev().skip(1) {
            match scope.kind {
                // A class gives the functions inside it an implicit `__class__` cell.
                ScopeKind::Class if name == "__class__" => return true,
                ScopeKind::Function { .. } | ScopeKind::Lambda => {
                    let binds = scope.bindings.contains(name)
                        || scope.has_param(name)
                        || scope.nonlocals.contains_key(name);
                    if binds && !scope.globals.contains_key(name) {
                        return true;
                    }
                }
                _ => {}
            }
        }
        false
    }
}

impl SemanticSyntaxContext for SemanticVisitor<'_> {
    fn future_annotations_or_stub(&self) -> bool {
        false
    }

    fn lazy_import_context(&self) -> Option<LazyImportContext> {
        match self.scope().map(|s| s.kind) {
            Some(ScopeKind::Function { .. } | ScopeKind::Lambda) => {
                Some(LazyImportContext::Function)
            }
            Some(ScopeKind::Class) => Some(LazyImportContext::Class),
            _ if self.in_try => Some(LazyImportContext::TryExceptBlocks),
            _ => None,
        }
    }

    fn python_version(&self) -> ast::PythonVersion {
        self.python_version
    }

    fn source(&self) -> &str {
        self.source
    }

    fn global(&self, name: &str) -> Option<TextRange> {
        // Asked for every name in the file: skip hashing when there is nothing to find.
        if !self.scan_declarations {
            return None;
        }
        self.scope().and_then(|s| s.globals.get(name).copied())
    }

    fn has_nonlocal_binding(&self, name: &str) -> bool {
        self.enclosing_function_binds(name)
    }

    fn in_async_context(&self) -> bool {
        for scope in self.scopes.iter().rev() {
            match scope.kind {
                ScopeKind::Comprehension { .. } => {}
                ScopeKind::Function { is_async } => return is_async,
                ScopeKind::Lambda | ScopeKind::Class | ScopeKind::Module => return false,
            }
        }
        false
    }

    fn in_await_allowed_context(&self) -> bool {
        for scope in self.scopes.iter().rev() {
            match scope.kind {
                // A generator expression with `await` is an async generator, valid anywhere.
                ScopeKind::Comprehension {
                    is_generator: true, ..
                } => return true,
                ScopeKind::Comprehension { .. } => {}
                ScopeKind::Function { .. } | ScopeKind::Lambda => return true,
                ScopeKind::Class | ScopeKind::Module => return false,
            }
        }
        false
    }

    fn in_yield_allowed_context(&self) -> bool {
        self.in_function_scope()
    }

    fn in_sync_comprehension(&self) -> bool {
        self.enclosing_comprehensions().any(|kind| {
            matches!(
                kind,
                ScopeKind::Comprehension {
                    is_async: false,
                    ..
                }
            )
        })
    }

    fn in_class_body_comprehension(&self) -> bool {
        let mut outward = self.scopes.iter().rev().map(|s| s.kind);
        matches!(
            outward.find(|kind| !matches!(kind, ScopeKind::Comprehension { .. })),
            Some(ScopeKind::Class)
        )
    }

    fn in_module_scope(&self) -> bool {
        matches!(self.scope().map(|s| s.kind), Some(ScopeKind::Module) | None)
    }

    fn in_function_scope(&self) -> bool {
        matches!(
            self.scope().map(|s| s.kind),
            Some(ScopeKind::Function { .. } | ScopeKind::Lambda)
        )
    }

    fn in_generator_context(&self) -> bool {
        self.enclosing_comprehensions().any(|kind| {
            matches!(
                kind,
                ScopeKind::Comprehension {
                    is_generator: true,
                    ..
                }
            )
        })
    }

    fn in_notebook(&self) -> bool {
        false
    }

    fn report_semantic_error(&self, error: SemanticSyntaxError) {
        self.errors.borrow_mut().push(error);
    }

    fn in_loop_context(&self) -> bool {
        self.scope().is_some_and(|s| s.loop_depth > 0)
    }

    fn is_bound_parameter(&self, name: &str) -> bool {
        self.scope().is_some_and(|s| s.has_param(name))
    }
}
