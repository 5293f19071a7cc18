//! CPython's compile-time checks: a walk of the tree that keeps the scope stack, feeds ruff's
//! [`SemanticSyntaxChecker`] (answering its questions in [`context`]) and adds the checks ruff's
//! crate leaves to its linter ([`checks`]).

mod checks;
mod context;

use std::cell::RefCell;

use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{self as ast, Expr, Stmt};
use ruff_python_parser::semantic_errors::{SemanticSyntaxChecker, SemanticSyntaxError};
use ruff_text_size::{Ranged, TextRange, TextSize};

use super::depth::{STACK_RED_ZONE, STACK_SEGMENT};
use super::messages::cpython_message;
use super::scopes::{Scope, ScopeKind};
use crate::RawDiagnostic;

/// CPython's compiler limit on statically nested blocks (`CO_MAXBLOCKS`).
const MAX_STATIC_BLOCKS: usize = 20;
/// Tree levels between two stack checks of the semantic visitor (well within the red zone).
const STACK_CHECK_INTERVAL: usize = 16;

/// Drives ruff's [`SemanticSyntaxChecker`] with the scope facts it asks for.
pub(super) struct SemanticVisitor<'a> {
    checker: SemanticSyntaxChecker,
    source: &'a str,
    python_version: ast::PythonVersion,
    scopes: Vec<Scope<'a>>,
    errors: RefCell<Vec<SemanticSyntaxError>>,
    extra: Vec<RawDiagnostic>,
    in_try: bool,
    /// Declarations and bindings only matter to `global`/`nonlocal` checks: most files have
    /// neither keyword, and skip the per-scope scans.
    scan_declarations: bool,
    collect_bindings: bool,
    depth: usize,
    augmented_target: Option<TextRange>,
}

impl<'a> SemanticVisitor<'a> {
    /// A visitor for one module; `scan_declarations` when the file has a `global` or
    /// `nonlocal` statement, `collect_bindings` when it has a `nonlocal` one.
    pub(super) fn new(
        source: &'a str,
        python_version: ast::PythonVersion,
        scan_declarations: bool,
        collect_bindings: bool,
    ) -> Self {
        Self {
            checker: SemanticSyntaxChecker::new(),
            source,
            python_version,
            scopes: Vec::new(),
            errors: RefCell::new(Vec::new()),
            extra: Vec::new(),
            in_try: false,
            scan_declarations,
            collect_bindings,
            depth: 0,
            augmented_target: None,
        }
    }

    pub(super) fn into_diagnostics(self) -> Vec<RawDiagnostic> {
        let mut out: Vec<RawDiagnostic> = self
            .errors
            .into_inner()
            .iter()
            .map(|e| RawDiagnostic::new(e.range.start(), cpython_message(e)))
            .collect();
        out.extend(self.extra);
        out
    }

    fn scope(&self) -> Option<&Scope<'a>> {
        self.scopes.last()
    }

    fn scope_mut(&mut self) -> Option<&mut Scope<'a>> {
        self.scopes.last_mut()
    }

    fn check_stmt(&mut self, stmt: &'a Stmt) {
        let mut checker = std::mem::take(&mut self.checker);
        checker.visit_stmt(stmt, self);
        self.checker = checker;
    }

    fn check_expr(&mut self, expr: &'a Expr) {
        let mut checker = std::mem::take(&mut self.checker);
        checker.visit_expr(expr, self);
        self.checker = checker;
    }

    fn with_scope(&mut self, scope: Scope<'a>, f: impl FnOnce(&mut Self)) {
        self.scopes.push(scope);
        let was_in_try = std::mem::replace(&mut self.in_try, false);
        f(self);
        self.in_try = was_in_try;
        self.scopes.pop();
    }

    /// Runs `f` one statically nested block deeper (CPython's frame-block stack).
    fn in_block(&mut self, offset: TextSize, is_loop: bool, f: impl FnOnce(&mut Self)) {
        let mut too_deep = false;
        if let Some(scope) = self.scope_mut() {
            scope.block_depth += 1;
            too_deep = scope.block_depth > MAX_STATIC_BLOCKS;
            if is_loop {
                scope.loop_depth += 1;
            }
        }
        if too_deep {
            self.extra.push(RawDiagnostic::new(
                offset,
                "too many statically nested blocks",
            ));
        }
        f(self);
        if let Some(scope) = self.scope_mut() {
            scope.block_depth = scope.block_depth.saturating_sub(1);
            if is_loop {
                scope.loop_depth = scope.loop_depth.saturating_sub(1);
            }
        }
    }

    fn visit_comprehension_expr(
        &mut self,
        generators: &'a [ast::Comprehension],
        elements: &[&'a Expr],
        is_generator: bool,
    ) {
        let Some((first, rest)) = generators.split_first() else {
            return;
        };
        // The first iterable is evaluated in the enclosing scope.
        self.visit_expr(&first.iter);
        let is_async = generators.iter().any(|g| g.is_async);
        // A comprehension is its own code object: no enclosing loop, fresh block stack.
        let scope = Scope::new(ScopeKind::Comprehension {
            is_async,
            is_generator,
        });
        self.with_scope(scope, |this| {
            this.visit_expr(&first.target);
            for condition in &first.ifs {
                this.visit_expr(condition);
            }
            for generator in rest {
                this.visit_expr(&generator.iter);
                this.visit_expr(&generator.target);
                for condition in &generator.ifs {
                    this.visit_expr(condition);
                }
            }
            for element in elements {
                this.visit_expr(element);
            }
        });
    }

    fn visit_parameter_defaults_and_annotations(&mut self, parameters: &'a ast::Parameters) {
        for default in parameters
            .iter_non_variadic_params()
            .filter_map(|p| p.default.as_deref())
        {
            self.visit_expr(default);
        }
        for parameter in parameters.iter() {
            if let Some(annotation) = parameter.annotation() {
                self.visit_expr(annotation);
            }
        }
    }
}

impl<'a> Visitor<'a> for SemanticVisitor<'a> {
    fn visit_pattern(&mut self, pattern: &'a ast::Pattern) {
        if self.scan_declarations {
            let name = match pattern {
                ast::Pattern::MatchAs(p) => p.name.as_ref(),
                ast::Pattern::MatchStar(p) => p.name.as_ref(),
                ast::Pattern::MatchMapping(p) => p.rest.as_ref(),
                _ => None,
            };
            if let Some(name) = name {
                self.report_bound_before_declaration(vec![(name.as_str(), name.range.start())]);
            }
        }
        visitor::walk_pattern(self, pattern);
    }

    fn visit_body(&mut self, body: &'a [Stmt]) {
        if self.scopes.is_empty() {
            let mut module = Scope::new(ScopeKind::Module);
            if self.scan_declarations {
                module.scan_body(body, self.collect_bindings);
            }
            self.scopes.push(module);
            visitor::walk_body(self, body);
            self.scopes.pop();
        } else {
            visitor::walk_body(self, body);
        }
    }

    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        self.descend(|this| this.visit_stmt_inner(stmt));
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        self.descend(|this| this.visit_expr_inner(expr));
    }
}

impl<'a> SemanticVisitor<'a> {
    /// One level deeper in the tree. The tree is at most [`MAX_AST_DEPTH`] deep here, but
    /// that can still exceed a 2 MB thread stack: check for room every few levels (a check
    /// per node would cost a few percent of the throughput).
    fn descend(&mut self, visit: impl FnOnce(&mut Self)) {
        self.depth += 1;
        if self.depth.is_multiple_of(STACK_CHECK_INTERVAL) {
            stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || visit(self));
        } else {
            visit(self);
        }
        self.depth -= 1;
    }

    fn visit_stmt_inner(&mut self, stmt: &'a Stmt) {
        // CPython's compiler checks `x.__debug__ = …` but not `x.__debug__ += …`.
        if let Stmt::AugAssign(s) = stmt {
            self.augmented_target = Some(s.target.range());
        }
        self.check_stmt(stmt);
        self.check_identifier_bindings(stmt);
        self.check_except_star_exit(stmt);
        match stmt {
            Stmt::FunctionDef(def) => self.visit_function_def(def),
            Stmt::ClassDef(class) => self.visit_class_def(class),
            Stmt::For(s) => {
                self.visit_expr(&s.iter);
                self.visit_expr(&s.target);
                self.in_block(s.start(), true, |this| this.visit_body(&s.body));
                self.visit_body(&s.orelse);
            }
            Stmt::While(s) => {
                self.visit_expr(&s.test);
                self.in_block(s.start(), true, |this| this.visit_body(&s.body));
                self.visit_body(&s.orelse);
            }
            Stmt::With(s) => {
                self.in_block(s.start(), false, |this| visitor::walk_stmt(this, stmt));
            }
            Stmt::Try(s) => self.visit_try(s),
            Stmt::Nonlocal(s) => {
                self.check_nonlocal_and_global(s);
                visitor::walk_stmt(self, stmt);
            }
            _ => visitor::walk_stmt(self, stmt),
        }
    }

    /// Decorators, type parameters, defaults and annotations in the enclosing scope; the body
    /// in the function's own.
    fn visit_function_def(&mut self, def: &'a ast::StmtFunctionDef) {
        for decorator in &def.decorator_list {
            self.visit_expr(&decorator.expression);
        }
        if let Some(type_params) = &def.type_params {
            self.visit_type_params(type_params);
        }
        self.visit_parameter_defaults_and_annotations(&def.parameters);
        if let Some(returns) = &def.returns {
            self.visit_expr(returns);
        }
        let mut scope = Scope::new(ScopeKind::Function {
            is_async: def.is_async,
        });
        scope.params = Some(&def.parameters);
        if self.scan_declarations {
            scope.scan_body(&def.body, self.collect_bindings);
        }
        self.with_scope(scope, |this| this.visit_body(&def.body));
    }

    /// Decorators, type parameters and bases in the enclosing scope; the body in the class's.
    fn visit_class_def(&mut self, class: &'a ast::StmtClassDef) {
        for decorator in &class.decorator_list {
            self.visit_expr(&decorator.expression);
        }
        if let Some(type_params) = &class.type_params {
            self.visit_type_params(type_params);
        }
        if let Some(arguments) = &class.arguments {
            self.visit_arguments(arguments);
        }
        let mut scope = Scope::new(ScopeKind::Class);
        if self.scan_declarations {
            scope.scan_body(&class.body, self.collect_bindings);
        }
        self.with_scope(scope, |this| this.visit_body(&class.body));
    }

    /// `try` body, handlers and `finally` each one block deeper; an `except*` handler marks
    /// the scope so `break`, `continue` and `return` out of it are caught.
    fn visit_try(&mut self, s: &'a ast::StmtTry) {
        self.check_try(s);
        let was_in_try = std::mem::replace(&mut self.in_try, true);
        self.in_block(s.start(), false, |this| this.visit_body(&s.body));
        for handler in &s.handlers {
            let ast::ExceptHandler::ExceptHandler(h) = handler;
            if let Some(type_) = &h.type_ {
                self.visit_expr(type_);
            }
            let saved = self
                .scope()
                .map(|sc| (sc.in_except_star, sc.except_star_loop_depth));
            if s.is_star {
                if let Some(scope) = self.scope_mut() {
                    scope.in_except_star = true;
                    scope.except_star_loop_depth = scope.loop_depth;
                }
            }
            self.in_block(h.start(), false, |this| this.visit_body(&h.body));
            if let (Some(scope), Some((flag, depth))) = (self.scope_mut(), saved) {
                scope.in_except_star = flag;
                scope.except_star_loop_depth = depth;
            }
        }
        self.visit_body(&s.orelse);
        if !s.finalbody.is_empty() {
            self.in_block(s.start(), false, |this| this.visit_body(&s.finalbody));
        }
        self.in_try = was_in_try;
    }

    fn visit_expr_inner(&mut self, expr: &'a Expr) {
        self.check_expr(expr);
        match expr {
            Expr::Name(name) => self.check_name(name),
            Expr::Attribute(attribute)
                if attribute.ctx.is_store()
                    && attribute.attr.as_str() == "__debug__"
                    && self.augmented_target != Some(attribute.range) =>
            {
                self.extra.push(RawDiagnostic::new(
                    attribute.attr.range.start(),
                    "cannot assign to __debug__",
                ));
            }
            Expr::FString(fstring) => {
                for part in fstring.value.f_strings() {
                    self.check_f_string_elements(&part.elements, 1);
                }
            }
            Expr::Named(named) if self.scan_declarations => self.check_named_target(named),
            Expr::Lambda(lambda) => return self.visit_lambda(lambda),
            Expr::ListComp(c) => {
                return self.visit_comprehension_expr(&c.generators, &[&c.elt], false);
            }
            Expr::SetComp(c) => {
                return self.visit_comprehension_expr(&c.generators, &[&c.elt], false);
            }
            Expr::Generator(c) => {
                return self.visit_comprehension_expr(&c.generators, &[&c.elt], true);
            }
            Expr::DictComp(c) => {
                let mut elements: Vec<&Expr> = Vec::with_capacity(2);
                if let Some(key) = &c.key {
                    elements.push(key);
                }
                elements.push(&c.value);
                return self.visit_comprehension_expr(&c.generators, &elements, false);
            }
            _ => {}
        }
        visitor::walk_expr(self, expr);
    }

    /// Defaults in the enclosing scope, the body in the lambda's own.
    fn visit_lambda(&mut self, lambda: &'a ast::ExprLambda) {
        let mut scope = Scope::new(ScopeKind::Lambda);
        if let Some(parameters) = &lambda.parameters {
            for default in parameters
                .iter_non_variadic_params()
                .filter_map(|p| p.default.as_deref())
            {
                self.visit_expr(default);
            }
            scope.params = Some(parameters);
        }
        self.with_scope(scope, |this| this.visit_expr(&lambda.body));
    }
}
