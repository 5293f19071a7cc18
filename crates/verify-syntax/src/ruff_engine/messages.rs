//! The diagnostic wording: CPython's messages where ruff's parser and checker word an error
//! differently.

use ruff_python_ast::IrrefutablePatternKind;
use ruff_python_parser::semantic_errors::{
    AwaitOutsideAsyncFunctionKind, SemanticSyntaxError, SemanticSyntaxErrorKind, WriteToDebugKind,
    YieldOutsideFunctionKind,
};
use ruff_python_parser::{LexicalErrorType, ParseError, ParseErrorType};

/// CPython's wording where ruff's differs and the difference helps the reader.
pub(super) fn parse_message(error: &ParseError, source: &str) -> String {
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

/// CPython's wording for the errors ruff's checker finds (ruff's own wording otherwise).
pub(super) fn cpython_message(error: &SemanticSyntaxError) -> String {
    let kind = &error.kind;
    control_flow_message(kind)
        .or_else(|| declaration_message(kind))
        .or_else(|| expression_message(kind))
        .unwrap_or_else(|| error.to_string())
}

/// `__future__` imports, `return`, `yield`, `await`, `break` and `continue` out of place.
fn control_flow_message(kind: &SemanticSyntaxErrorKind) -> Option<String> {
    use SemanticSyntaxErrorKind as K;
    let message = match kind {
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
        K::YieldFromInAsyncFunction => "'yield from' inside async function".to_owned(),
        K::BreakOutsideLoop => "'break' outside loop".to_owned(),
        K::ContinueOutsideLoop => "'continue' not properly in loop".to_owned(),
        K::ReturnInGenerator => "'return' with value in async generator".to_owned(),
        _ => return None,
    };
    Some(message)
}

/// Parameters, `global`/`nonlocal` declarations, imports and `__debug__`.
fn declaration_message(kind: &SemanticSyntaxErrorKind) -> Option<String> {
    use SemanticSyntaxErrorKind as K;
    let message = match kind {
        K::DuplicateParameter(name) => {
            format!("duplicate argument '{name}' in function definition")
        }
        K::NonlocalDeclarationAtModuleLevel => {
            "nonlocal declaration not allowed at module level".to_owned()
        }
        K::NonlocalAndGlobal(name) => format!("name '{name}' is nonlocal and global"),
        K::AnnotatedGlobal(name) => format!("annotated name '{name}' can't be global"),
        K::AnnotatedNonlocal(name) => format!("annotated name '{name}' can't be nonlocal"),
        K::NonModuleImportStar(_) => "import * only allowed at module level".to_owned(),
        K::GlobalParameter(name) => format!("name '{name}' is parameter and global"),
        K::NonlocalParameter(name) => format!("name '{name}' is parameter and nonlocal"),
        K::NonlocalWithoutBinding(name) => format!("no binding for nonlocal '{name}' found"),
        K::LoadBeforeGlobalDeclaration { name, .. } => {
            format!("name '{name}' is used prior to global declaration")
        }
        K::LoadBeforeNonlocalDeclaration { name, .. } => {
            format!("name '{name}' is used prior to nonlocal declaration")
        }
        K::WriteToDebug(WriteToDebugKind::Store) => "cannot assign to __debug__".to_owned(),
        K::WriteToDebug(WriteToDebugKind::Delete(_)) => "cannot delete __debug__".to_owned(),
        _ => return None,
    };
    Some(message)
}

/// Starred expressions, keyword arguments, `match` patterns and assignment expressions.
fn expression_message(kind: &SemanticSyntaxErrorKind) -> Option<String> {
    use SemanticSyntaxErrorKind as K;
    let message = match kind {
        K::DuplicateKeywordArgument(name) => format!("keyword argument repeated: {name}"),
        K::MultipleStarredExpressions => "multiple starred expressions in assignment".to_owned(),
        K::InvalidStarExpression => "can't use starred expression here".to_owned(),
        K::SingleStarredAssignment => {
            "starred assignment target must be in a list or tuple".to_owned()
        }
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
        _ => return None,
    };
    Some(message)
}
