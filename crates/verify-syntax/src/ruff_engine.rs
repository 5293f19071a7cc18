//! Engine `ruff`: ruff's error-recovering parser, its version-aware "unsupported syntax" errors,
//! its [`SemanticSyntaxChecker`] driven by our own scope tracking, plus the few compile-time
//! checks CPython makes that ruff's crate leaves to its linter.

use std::cell::RefCell;

use ruff_python_ast::token::TokenKind;
use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{self as ast, Expr, IrrefutablePatternKind, ModModule, Stmt};
use ruff_python_parser::semantic_errors::{
    AwaitOutsideAsyncFunctionKind, LazyImportContext, SemanticSyntaxChecker, SemanticSyntaxContext,
    SemanticSyntaxError, SemanticSyntaxErrorKind, WriteToDebugKind, YieldOutsideFunctionKind,
};
use ruff_python_parser::{
    LexicalErrorType, Mode, ParseError, ParseErrorType, ParseOptions, Parsed,
};
use ruff_text_size::{Ranged, TextRange, TextSize};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::entrypoint::{EntrypointSpec, Signature};
use crate::RawDiagnostic;

/// CPython's tokenizer limit on open brackets (`MAXLEVEL`).
const MAX_PAREN_LEVEL: usize = 200;
/// CPython's tokenizer limit on indentation levels (`MAXINDENT`, the module level included).
const MAX_INDENT_LEVEL: usize = 99;
/// CPython's compiler limit on statically nested blocks (`CO_MAXBLOCKS`).
const MAX_STATIC_BLOCKS: usize = 20;
/// Deepest chain of nested statements and expressions CPython 3.11 compiles (measured:
/// `x = -…-1` with 2989 minus signs compiles, 2990 raise "maximum recursion depth exceeded
/// during compilation").
const MAX_AST_DEPTH: usize = 2991;
/// Stack kept free before a recursive step, and the size of each extra stack segment.
const STACK_RED_ZONE: usize = 1024 * 1024;
const STACK_SEGMENT: usize = 4 * 1024 * 1024;
/// Tree levels between two stack checks of the semantic visitor (well within the red zone).
const STACK_CHECK_INTERVAL: usize = 16;
/// Stack reserved per token to drop a pathologically deep tree (Drop recurses).
const DROP_STACK_PER_TOKEN: usize = 512;

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
    let mut diagnostics: Vec<RawDiagnostic> = Vec::new();
    // CPython's tokenizer raises TabError before the parser sees the line; what ruff reports
    // from that point on are consequences.
    check_tab_consistency(source, &parsed, &mut diagnostics);
    let tab_error_at = diagnostics.first().map(|d| d.offset);
    diagnostics.extend(
        parsed
            .errors()
            .iter()
            .filter(|error| tab_error_at.is_none_or(|at| error.location.start().to_usize() < at))
            .map(|error| RawDiagnostic::new(error.location.start(), parse_message(error, source))),
    );
    diagnostics.extend(
        parsed
            .unsupported_syntax_errors()
            .iter()
            .map(|error| RawDiagnostic::new(error.range.start(), error.to_string())),
    );
    let TokenFacts {
        depth_bound,
        has_declarations,
        has_nonlocal,
    } = check_token_limits(&parsed, &mut diagnostics);
    let token_count = parsed.tokens().len();
    let Some(module) = parsed.try_into_module() else {
        return diagnostics;
    };
    // Only a walk finds the real depth; the token bound spares it to nearly every file.
    let too_deep = if depth_bound > MAX_AST_DEPTH {
        first_node_too_deep(&module.syntax().body)
    } else {
        None
    };
    if let Some(offset) = too_deep {
        diagnostics.push(RawDiagnostic::new(
            offset,
            "too complex: maximum recursion depth exceeded during compilation",
        ));
        diagnostics.sort_by_key(|d| d.offset);
        // Dropping the tree recurses once per level: give it a stack that fits.
        let stack = STACK_SEGMENT.saturating_add(token_count.saturating_mul(DROP_STACK_PER_TOKEN));
        stacker::grow(stack, move || drop(module));
        return diagnostics;
    }
    // A recovered tree after a parse error yields mostly noise; CPython stops at the first error.
    if diagnostics.is_empty() {
        let mut visitor = SemanticVisitor::new(source, python_version);
        visitor.scan_declarations = has_declarations;
        visitor.collect_bindings = has_nonlocal;
        visitor.visit_body(&module.syntax().body);
        diagnostics.extend(visitor.into_diagnostics());
        if let Some(spec) = entrypoint {
            if let Err(message) = spec.check(find_entrypoint(module.syntax(), &spec.name)) {
                diagnostics.push(RawDiagnostic::new(TextSize::default(), message));
            }
        }
    }
    diagnostics.sort_by_key(|d| d.offset);
    diagnostics
}

/// Where the statement/expression nesting first exceeds [`MAX_AST_DEPTH`], if it does.
fn first_node_too_deep(body: &[Stmt]) -> Option<TextSize> {
    struct DepthWalker {
        depth: usize,
        found: Option<TextSize>,
    }
    impl DepthWalker {
        fn enter(&mut self, start: TextSize, walk: impl FnOnce(&mut Self)) {
            if self.found.is_some() {
                return;
            }
            self.depth += 1;
            if self.depth > MAX_AST_DEPTH {
                self.found = Some(start);
            } else {
                stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || walk(self));
            }
            self.depth -= 1;
        }
    }
    impl<'a> Visitor<'a> for DepthWalker {
        fn visit_stmt(&mut self, stmt: &'a Stmt) {
            self.enter(stmt.start(), |this| visitor::walk_stmt(this, stmt));
        }
        fn visit_expr(&mut self, expr: &'a Expr) {
            self.enter(expr.start(), |this| visitor::walk_expr(this, expr));
        }
    }
    let mut walker = DepthWalker {
        depth: 0,
        found: None,
    };
    walker.visit_body(body);
    walker.found
}

/// CPython's wording where ruff's differs and the difference helps the reader.
fn parse_message(error: &ParseError, source: &str) -> String {
    let start = error.location.start().to_usize();
    let text = source
        .get(start..error.location.end().to_usize())
        .unwrap_or_default();
    match &error.error {
        ParseErrorType::Lexical(LexicalErrorType::UnrecognizedToken { tok }) => {
            invalid_character_message(*tok)
        }
        ParseErrorType::Lexical(LexicalErrorType::UnclosedStringError) => {
            // CPython names the line where the tokenizer gave up (a final newline excluded).
            let end = error.location.end().to_usize().min(source.len());
            let line = source[..end].trim_end_matches(['\n', '\r']).matches('\n').count() + 1;
            let triple = ["'''", "\"\"\""]
                .iter()
                .any(|q| text.trim_start_matches(|c: char| c.is_ascii_alphabetic()).starts_with(q));
            let kind = if triple { "triple-quoted string literal" } else { "string literal" };
            format!("unterminated {kind} (detected at line {line})")
        }
        ParseErrorType::Lexical(LexicalErrorType::OtherError(message))
            if message.starts_with("Invalid decimal integer literal")
                && text.starts_with('0') =>
        {
            "leading zeros in decimal integer literals are not permitted; use an 0o prefix for octal integers".to_owned()
        }
        other => other.to_string(),
    }
}

/// CPython: "invalid character '€' (U+20AC)", or "invalid non-printable character U+00A0".
fn invalid_character_message(c: char) -> String {
    let code = u32::from(c);
    let non_printable = c.is_control()
        || c.is_whitespace()
        || matches!(code, 0xAD | 0x200B..=0x200F | 0x2028..=0x202F | 0x2060..=0x206F | 0xFEFF);
    if c.is_ascii() && !c.is_control() {
        "invalid syntax".to_owned()
    } else if non_printable {
        format!("invalid non-printable character U+{code:04X}")
    } else {
        format!("invalid character '{c}' (U+{code:04X})")
    }
}

/// What one pass over the tokens tells about the tree.
struct TokenFacts {
    /// An upper bound of the tree depth: every nested expression node takes at least one
    /// token of its logical line, every nested statement one indentation level (two
    /// counting a simple statement after `:` on the same line).
    depth_bound: usize,
    /// The file has a `global` or `nonlocal` statement.
    has_declarations: bool,
    /// The file has a `nonlocal` statement (which needs every scope's bindings).
    has_nonlocal: bool,
}

/// Bracket nesting and indentation depth limits of CPython's tokenizer, plus [`TokenFacts`].
fn check_token_limits<T>(parsed: &Parsed<T>, diagnostics: &mut Vec<RawDiagnostic>) -> TokenFacts {
    let too_deep = TokenFacts {
        depth_bound: usize::MAX,
        has_declarations: true,
        has_nonlocal: true,
    };
    let mut has_declarations = false;
    let mut has_nonlocal = false;
    let mut paren_level = 0usize;
    let mut indent_level = 0usize;
    let mut max_indent = 0usize;
    let mut line_tokens = 0usize;
    let mut max_line_tokens = 0usize;
    for token in parsed.tokens().iter() {
        line_tokens += 1;
        match token.kind() {
            TokenKind::Newline => {
                max_line_tokens = max_line_tokens.max(line_tokens);
                line_tokens = 0;
            }
            TokenKind::Lpar | TokenKind::Lsqb | TokenKind::Lbrace => {
                paren_level += 1;
                if paren_level > MAX_PAREN_LEVEL {
                    diagnostics.push(RawDiagnostic::new(
                        token.start(),
                        "too many nested parentheses",
                    ));
                    return too_deep;
                }
            }
            TokenKind::Rpar | TokenKind::Rsqb | TokenKind::Rbrace => {
                paren_level = paren_level.saturating_sub(1);
            }
            TokenKind::Indent => {
                indent_level += 1;
                max_indent = max_indent.max(indent_level);
                if indent_level >= MAX_INDENT_LEVEL {
                    diagnostics.push(RawDiagnostic::new(
                        token.start(),
                        "too many levels of indentation",
                    ));
                    return too_deep;
                }
            }
            TokenKind::Dedent => indent_level = indent_level.saturating_sub(1),
            TokenKind::Global => has_declarations = true,
            TokenKind::Nonlocal => {
                has_declarations = true;
                has_nonlocal = true;
            }
            _ => {}
        }
    }
    TokenFacts {
        depth_bound: max_line_tokens.max(line_tokens) + 2 * (max_indent + 1),
        has_declarations,
        has_nonlocal,
    }
}

/// CPython's `TabError`: indentation must compare the same with tabs worth 8 columns and
/// with tabs worth 1 column. ruff's lexer is more lenient here.
fn check_tab_consistency<T>(
    source: &str,
    parsed: &Parsed<T>,
    diagnostics: &mut Vec<RawDiagnostic>,
) {
    if !source.contains('\t') {
        return;
    }
    let bytes = source.as_bytes();
    // Stacks of (col, altcol) per indentation level; level 0 is the module.
    let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
    let mut at_line_start = true;
    for token in parsed.tokens().iter() {
        match token.kind() {
            TokenKind::Newline => {
                at_line_start = true;
                continue;
            }
            TokenKind::Indent
            | TokenKind::Dedent
            | TokenKind::NonLogicalNewline
            | TokenKind::Comment
            | TokenKind::EndOfFile => continue,
            _ => {}
        }
        if !at_line_start {
            continue;
        }
        at_line_start = false;
        // The indentation is the line's leading whitespace, whatever token comes first
        // (after an indentation error ruff may start the line with an error token).
        let start = token.start().to_usize().min(bytes.len());
        let line_start = bytes[..start]
            .iter()
            .rposition(|&b| b == b'\n' || b == b'\r')
            .map_or(0, |p| p + 1);
        let (mut col, mut altcol) = (0usize, 0usize);
        for &b in &bytes[line_start..] {
            match b {
                b' ' => {
                    col += 1;
                    altcol += 1;
                }
                b'\t' => {
                    col = (col / 8 + 1) * 8;
                    altcol += 1;
                }
                b'\x0c' => {
                    col = 0;
                    altcol = 0;
                }
                _ => break,
            }
        }
        // A continuation line (`\` before it) is not an indentation.
        if line_start > 0 && bytes[..line_start].ends_with(b"\\\n") {
            continue;
        }
        let (top_col, top_alt) = stack.last().copied().unwrap_or((0, 0));
        let inconsistent = if col == top_col {
            altcol != top_alt
        } else if col > top_col {
            stack.push((col, altcol));
            altcol <= top_alt
        } else {
            while stack.len() > 1 && stack.last().is_some_and(|&(c, _)| col < c) {
                stack.pop();
            }
            stack.last().is_some_and(|&(c, a)| c == col && a != altcol)
        };
        if inconsistent {
            diagnostics.push(RawDiagnostic::new(
                token.start(),
                "inconsistent use of tabs and spaces in indentation",
            ));
            return;
        }
    }
}

/// The last module-level `def NAME` (also inside module-level `if`/`try`/`with` blocks).
fn find_entrypoint(module: &ModModule, name: &str) -> Option<Signature> {
    fn search(body: &[Stmt], name: &str, found: &mut Option<Signature>) {
        for stmt in body {
            match stmt {
                Stmt::FunctionDef(def) if def.name.as_str() == name => {
                    let p = &def.parameters;
                    let positional = p.posonlyargs.iter().chain(p.args.iter());
                    *found = Some(Signature {
                        is_async: def.is_async,
                        required_positional: positional
                            .clone()
                            .filter(|a| a.default.is_none())
                            .count(),
                        total_positional: positional.count(),
                        has_varargs: p.vararg.is_some(),
                        required_keyword_only: p
                            .kwonlyargs
                            .iter()
                            .filter(|a| a.default.is_none())
                            .count(),
                    });
                }
                Stmt::If(s) => {
                    search(&s.body, name, found);
                    for clause in &s.elif_else_clauses {
                        search(&clause.body, name, found);
                    }
                }
                Stmt::Try(s) => {
                    search(&s.body, name, found);
                    for handler in &s.handlers {
                        let ast::ExceptHandler::ExceptHandler(h) = handler;
                        search(&h.body, name, found);
                    }
                    search(&s.orelse, name, found);
                    search(&s.finalbody, name, found);
                }
                Stmt::With(s) => search(&s.body, name, found),
                _ => {}
            }
        }
    }
    let mut found = None;
    search(&module.body, name, &mut found);
    found
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScopeKind {
    Module,
    Class,
    Function { is_async: bool },
    Lambda,
    Comprehension { is_async: bool, is_generator: bool },
}

struct Scope<'a> {
    kind: ScopeKind,
    params: Option<&'a ast::Parameters>,
    /// `global` declarations of this scope: name -> range of the declaring statement.
    globals: FxHashMap<&'a str, TextRange>,
    nonlocals: FxHashMap<&'a str, TextRange>,
    /// Names bound in this scope (functions only; used to resolve `nonlocal`).
    bindings: FxHashSet<&'a str>,
    loop_depth: usize,
    /// Statically nested blocks (loops, `try`, `with`) in this code object.
    block_depth: usize,
    /// Inside an `except*` handler and not inside a loop nested in it.
    in_except_star: bool,
    except_star_loop_depth: usize,
}

impl<'a> Scope<'a> {
    fn new(kind: ScopeKind) -> Self {
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

    fn has_param(&self, name: &str) -> bool {
        self.params
            .is_some_and(|p| p.iter().any(|param| param.name().as_str() == name))
    }

    /// Fills declarations and bindings from the scope's own statements.
    /// Bindings (the expensive part: every expression) only when `collect_bindings`.
    fn scan_body(&mut self, body: &'a [Stmt], collect_bindings: bool) {
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

/// Drives ruff's [`SemanticSyntaxChecker`] with the scope facts it asks for.
struct SemanticVisitor<'a> {
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
    fn new(source: &'a str, python_version: ast::PythonVersion) -> Self {
        Self {
            checker: SemanticSyntaxChecker::new(),
            source,
            python_version,
            scopes: Vec::new(),
            errors: RefCell::new(Vec::new()),
            extra: Vec::new(),
            in_try: false,
            scan_declarations: false,
            collect_bindings: false,
            depth: 0,
            augmented_target: None,
        }
    }

    fn into_diagnostics(self) -> Vec<RawDiagnostic> {
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

    /// The comprehensions the current position is nested in, innermost first, up to the
    /// first scope that is not one.
    fn enclosing_comprehensions(&self) -> impl Iterator<Item = ScopeKind> + '_ {
        self.scopes
            .iter()
            .rev()
            .map(|s| s.kind)
            .take_while(|kind| matches!(kind, ScopeKind::Comprehension { .. }))
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

    fn check_try(&mut self, stmt: &'a ast::StmtTry) {
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

    fn check_except_star_exit(&mut self, stmt: &'a Stmt) {
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
    fn check_f_string_elements(
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
    fn check_identifier_bindings(&mut self, stmt: &'a Stmt) {
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

    fn report_bound_before_declaration(&mut self, bound: Vec<(&str, TextSize)>) {
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

    fn check_name(&mut self, name: &'a ast::ExprName) {
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
            Stmt::FunctionDef(def) => {
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
            Stmt::ClassDef(class) => {
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
            Stmt::Try(s) => {
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
            Stmt::Nonlocal(s) => {
                if let Some(scope) = self.scopes.last() {
                    for name in &s.names {
                        if scope.globals.contains_key(name.as_str()) {
                            self.extra.push(RawDiagnostic::new(
                                name.range.start(),
                                format!("name '{name}' is nonlocal and global"),
                            ));
                        }
                    }
                }
                visitor::walk_stmt(self, stmt);
            }
            _ => visitor::walk_stmt(self, stmt),
        }
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
            Expr::Named(named) if self.scan_declarations => {
                if let (Expr::Name(target), Some(ScopeKind::Comprehension { .. })) =
                    (named.target.as_ref(), self.scope().map(|s| s.kind))
                {
                    self.report_bound_before_declaration(vec![(
                        target.id.as_str(),
                        target.range.start(),
                    )]);
                }
            }
            Expr::Lambda(lambda) => {
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
                return;
            }
            Expr::ListComp(c) => {
                self.visit_comprehension_expr(&c.generators, &[&c.elt], false);
                return;
            }
            Expr::SetComp(c) => {
                self.visit_comprehension_expr(&c.generators, &[&c.elt], false);
                return;
            }
            Expr::Generator(c) => {
                self.visit_comprehension_expr(&c.generators, &[&c.elt], true);
                return;
            }
            Expr::DictComp(c) => {
                let mut elements: Vec<&Expr> = Vec::with_capacity(2);
                if let Some(key) = &c.key {
                    elements.push(key);
                }
                elements.push(&c.value);
                self.visit_comprehension_expr(&c.generators, &elements, false);
                return;
            }
            _ => {}
        }
        visitor::walk_expr(self, expr);
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

/// CPython's wording for the errors ruff's checker finds (ruff's own wording otherwise).
fn cpython_message(error: &SemanticSyntaxError) -> String {
    use SemanticSyntaxErrorKind as K;
    match &error.kind {
        K::LateFutureImport => {
            "from __future__ imports must occur at the beginning of the file".to_owned()
        }
        K::FutureFeatureNotDefined(name) if name == "braces" => "not a chance".to_owned(),
        K::FutureFeatureNotDefined(name) => format!("future feature {name} is not defined"),
        K::ReturnOutsideFunction => "'return' outside function".to_owned(),
        K::YieldOutsideFunction(kind) => {
            let keyword = match kind {
                YieldOutsideFunctionKind::Await => "await",
                YieldOutsideFunctionKind::Yield | YieldOutsideFunctionKind::YieldFrom => "yield",
            };
            format!("'{keyword}' outside function")
        }
        K::AwaitOutsideAsyncFunction(kind) => match kind {
            AwaitOutsideAsyncFunctionKind::Await => "'await' outside async function".to_owned(),
            AwaitOutsideAsyncFunctionKind::AsyncFor => {
                "'async for' outside async function".to_owned()
            }
            AwaitOutsideAsyncFunctionKind::AsyncWith => {
                "'async with' outside async function".to_owned()
            }
            AwaitOutsideAsyncFunctionKind::AsyncComprehension => {
                "asynchronous comprehension outside of an asynchronous function".to_owned()
            }
        },
        K::DuplicateParameter(name) => {
            format!("duplicate argument '{name}' in function definition")
        }
        K::NonlocalDeclarationAtModuleLevel => {
            "nonlocal declaration not allowed at module level".to_owned()
        }
        K::DuplicateKeywordArgument(name) => format!("keyword argument repeated: {name}"),
        K::NonlocalAndGlobal(name) => format!("name '{name}' is nonlocal and global"),
        K::AnnotatedGlobal(name) => format!("annotated name '{name}' can't be global"),
        K::AnnotatedNonlocal(name) => format!("annotated name '{name}' can't be nonlocal"),
        K::YieldFromInAsyncFunction => "'yield from' inside async function".to_owned(),
        K::NonModuleImportStar(_) => "import * only allowed at module level".to_owned(),
        K::MultipleStarredExpressions => "multiple starred expressions in assignment".to_owned(),
        K::BreakOutsideLoop => "'break' outside loop".to_owned(),
        K::ContinueOutsideLoop => "'continue' not properly in loop".to_owned(),
        K::GlobalParameter(name) => format!("name '{name}' is parameter and global"),
        K::NonlocalParameter(name) => format!("name '{name}' is parameter and nonlocal"),
        K::NonlocalWithoutBinding(name) => format!("no binding for nonlocal '{name}' found"),
        K::ReturnInGenerator => "'return' with value in async generator".to_owned(),
        K::LoadBeforeGlobalDeclaration { name, .. } => {
            format!("name '{name}' is used prior to global declaration")
        }
        K::LoadBeforeNonlocalDeclaration { name, .. } => {
            format!("name '{name}' is used prior to nonlocal declaration")
        }
        K::InvalidStarExpression => "can't use starred expression here".to_owned(),
        K::SingleStarredAssignment => {
            "starred assignment target must be in a list or tuple".to_owned()
        }
        K::WriteToDebug(WriteToDebugKind::Store) => "cannot assign to __debug__".to_owned(),
        K::WriteToDebug(WriteToDebugKind::Delete(_)) => "cannot delete __debug__".to_owned(),
        K::IrrefutableCasePattern(IrrefutablePatternKind::Name(name)) => {
            format!("name capture '{name}' makes remaining patterns unreachable")
        }
        K::IrrefutableCasePattern(IrrefutablePatternKind::Wildcard) => {
            "wildcard makes remaining patterns unreachable".to_owned()
        }
        K::MultipleCaseAssignment(name) => {
            format!("multiple assignments to name '{name}' in pattern")
        }
        K::DuplicateMatchClassAttribute(name) => {
            format!("attribute name repeated in class pattern: {name}")
        }
        K::DifferentMatchPatternBindings => "alternative patterns bind different names".to_owned(),
        K::NamedExpressionInComprehensionIterable => {
            "assignment expression cannot be used in a comprehension iterable expression".to_owned()
        }
        K::NamedExpressionInClassBodyComprehension => {
            "assignment expression within a comprehension cannot be used in a class body".to_owned()
        }
        K::ReboundComprehensionVariable => {
            "assignment expression cannot rebind comprehension iteration variable".to_owned()
        }
        _ => error.to_string(),
    }
}
