//! Scope tracking: the kinds of scope CPython's symbol table knows, and what one scope
//! declares (`global`, `nonlocal`) and binds, collected without entering nested scopes.

use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{self as ast, Expr, Stmt};
use ruff_text_size::TextRange;
use rustc_hash::{FxHashMap, FxHashSet};

use super::depth::{STACK_RED_ZONE, STACK_SEGMENT};

/// The kind of a scope (a code object, the module's included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScopeKind {
    Module,
    Class,
    Function { is_async: bool },
    Lambda,
    Comprehension { is_async: bool, is_generator: bool },
}

/// One scope on the visitor's stack: its declarations, bindings and block nesting.
pub(super) struct Scope<'a> {
    pub(super) kind: ScopeKind,
    pub(super) params: Option<&'a ast::Parameters>,
    /// `global` declarations of this scope: name -> range of the declaring statement.
    pub(super) globals: FxHashMap<&'a str, TextRange>,
    pub(super) nonlocals: FxHashMap<&'a str, TextRange>,
    /// Names bound in this scope (functions only; used to resolve `nonlocal`).
    pub(super) bindings: FxHashSet<&'a str>,
    pub(super) loop_depth: usize,
    /// Statically nested blocks (loops, `try`, `with`) in this code object.
    pub(super) block_depth: usize,
    /// Inside an `except*` handler and not inside a loop nested in it.
    pub(super) in_except_star: bool,
    pub(super) except_star_loop_depth: usize,
}

impl<'a> Scope<'a> {
    pub(super) fn new(kind: ScopeKind) -> Self {
        Self {
            kind,
            params: None,
            globals: FxHashMap::default(),
            nonlocals: FxHashMap::default(),
            bindings: FxHashSet::default(),
            loop_depth: 0,
            block_depth: 0,
            in_except_star: false,
            except_star_loop_depth: 0,
        }
    }

    pub(super) fn has_param(&self, name: &str) -> bool {
        self.params
            .is_some_and(|p| p.iter().any(|param| param.name().as_str() == name))
    }

    /// Fills declarations and bindings from the scope's own statements.
    /// Bindings (the expensive part: every expression) only when `collect_bindings`.
    pub(super) fn scan_body(&mut self, body: &'a [Stmt], collect_bindings: bool) {
        let mut scanner = ScopeScanner {
            scope: self,
            collect_bindings,
        };
        scanner.visit_body(body);
    }
}

/// Collects the declarations and bindings of one scope without entering nested scopes.
struct ScopeScanner<'s, 'a> {
    scope: &'s mut Scope<'a>,
    collect_bindings: bool,
}

impl<'a> Visitor<'a> for ScopeScanner<'_, 'a> {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        match stmt {
            Stmt::Global(s) => {
                // The last declaration counts: a use before any of them is an error.
                for name in &s.names {
                    self.scope.globals.insert(name.as_str(), s.range);
                }
            }
            Stmt::Nonlocal(s) => {
                for name in &s.names {
                    self.scope.nonlocals.insert(name.as_str(), s.range);
                }
            }
            Stmt::FunctionDef(s) => {
                self.scope.bindings.insert(s.name.as_str());
                for decorator in &s.decorator_list {
                    self.visit_expr(&decorator.expression);
                }
            }
            Stmt::ClassDef(s) => {
                self.scope.bindings.insert(s.name.as_str());
                for decorator in &s.decorator_list {
                    self.visit_expr(&decorator.expression);
                }
                if let Some(arguments) = &s.arguments {
                    self.visit_arguments(arguments);
                }
            }
            Stmt::Import(s) => {
                for alias in &s.names {
                    let bound = alias.asname.as_ref().unwrap_or(&alias.name);
                    let first = bound.as_str().split('.').next().unwrap_or_default();
                    self.scope.bindings.insert(first);
                }
            }
            Stmt::ImportFrom(s) => {
                for alias in &s.names {
                    let bound = alias.asname.as_ref().unwrap_or(&alias.name);
                    self.scope.bindings.insert(bound.as_str());
                }
            }
            Stmt::Try(s) => {
                for handler in &s.handlers {
                    let ast::ExceptHandler::ExceptHandler(h) = handler;
                    if let Some(name) = &h.name {
                        self.scope.bindings.insert(name.as_str());
                    }
                }
                visitor::walk_stmt(self, stmt);
            }
            _ => stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || {
                visitor::walk_stmt(self, stmt);
            }),
        }
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        if !self.collect_bindings {
            return;
        }
        match expr {
            Expr::Name(name) if !name.ctx.is_load() => {
                self.scope.bindings.insert(name.id.as_str());
            }
            // Lambda bodies are their own scope; only defaults are evaluated here.
            Expr::Lambda(lambda) => {
                if let Some(parameters) = &lambda.parameters {
                    for default in parameters
                        .iter_non_variadic_params()
                        .filter_map(|p| p.default.as_deref())
                    {
                        self.visit_expr(default);
                    }
                }
            }
            // A comprehension is its own scope: only its first iterable is evaluated here, and
            // only its walrus targets bind here.
            Expr::ListComp(ast::ExprListComp { generators, .. })
            | Expr::SetComp(ast::ExprSetComp { generators, .. })
            | Expr::DictComp(ast::ExprDictComp { generators, .. })
            | Expr::Generator(ast::ExprGenerator { generators, .. }) => {
                if let Some(first) = generators.first() {
                    self.visit_expr(&first.iter);
                }
                let mut walrus = WalrusTargets { scanner: self };
                visitor::walk_expr(&mut walrus, expr);
            }
            _ => stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || {
                visitor::walk_expr(self, expr);
            }),
        }
    }

    fn visit_pattern(&mut self, pattern: &'a ast::Pattern) {
        if !self.collect_bindings {
            return;
        }
        match pattern {
            ast::Pattern::MatchAs(p) => {
                if let Some(name) = &p.name {
                    self.scope.bindings.insert(name.as_str());
                }
            }
            ast::Pattern::MatchStar(p) => {
                if let Some(name) = &p.name {
                    self.scope.bindings.insert(name.as_str());
                }
            }
            ast::Pattern::MatchMapping(p) => {
                if let Some(name) = &p.rest {
                    self.scope.bindings.insert(name.as_str());
                }
            }
            _ => {}
        }
        visitor::walk_pattern(self, pattern);
    }
}

/// Records the walrus targets inside a comprehension as bindings of the enclosing scope.
struct WalrusTargets<'w, 's, 'a> {
    scanner: &'w mut ScopeScanner<'s, 'a>,
}

impl<'a> Visitor<'a> for WalrusTargets<'_, '_, 'a> {
    fn visit_expr(&mut self, expr: &'a Expr) {
        match expr {
            Expr::Named(named) => {
                if let Expr::Name(name) = named.target.as_ref() {
                    self.scanner.scope.bindings.insert(name.id.as_str());
                }
                self.visit_expr(&named.value);
            }
            Expr::Lambda(_) => {}
            _ => stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || {
                visitor::walk_expr(self, expr);
            }),
        }
    }
}
