//! A partner's `transform`: a jq program (run by `jaq`) applied to each
//! inbound file record before the declarative mapping and the rules. It gets
//! the record as the partner sent it, a JSON object of text fields, and must
//! give exactly one object back; text, numbers and booleans become fields,
//! `null` drops one.
//!
//! Why jq through `jaq`: operators already reshape JSON with jq, and can try
//! a program with the `jq` they have; `jaq` is pure Rust, maintained, and
//! compiles a program once. Sandboxing is ours to finish, because jaq has
//! no step or depth limit:
//! - no I/O: `env`, `$ENV`, `now` and `input` are left out (a transform is
//!   a pure function of the record, so a dry run and the import agree),
//!   `debug` and `stderr` print nothing, imports find no files, and `halt`
//!   is an error, not an exit;
//! - no recursion of its own: a program may not `def`ine functions, so it
//!   cannot recurse until the stack overflows (the library's own loops are
//!   tail calls);
//! - a deadline: every run happens on the transform's own thread and gets
//!   [`DEADLINE`]. A run that does not finish in time (`last(repeat(1))`)
//!   cannot be stopped: its record fails, the stuck thread is left behind,
//!   and the transform refuses every later record until the process is
//!   restarted with a fixed program, so at most one thread is ever lost.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use jaq_core::{
    Compiler, Ctx, Cv, Native, ValXs, Vars, data,
    load::{self, Arena, File, Lexer, Loader, lex::Tok},
    native::Fun,
};
use jaq_json::Val;

/// How long one record may take.
pub const DEADLINE: Duration = Duration::from_secs(2);

type Data = data::JustLut<Val>;
type Record = BTreeMap<String, String>;
type Job = (Record, mpsc::SyncSender<Result<Record, String>>);

/// A compiled transform program and the thread that runs it.
#[derive(Debug)]
pub struct Transform {
    code: String,
    /// Started at the first record, so `config check` starts no thread.
    runner: Mutex<Option<mpsc::Sender<Job>>>,
    stuck: AtomicBool,
    deadline: Duration,
}

impl Transform {
    /// Checks that `code` compiles under the sandbox's rules; the error
    /// names the first problem.
    pub fn compile(code: &str) -> Result<Self, String> {
        Self::with_deadline(code, DEADLINE)
    }

    fn with_deadline(code: &str, deadline: Duration) -> Result<Self, String> {
        Program::compile(code)?;
        Ok(Self { code: code.to_owned(), runner: Mutex::new(None), stuck: AtomicBool::new(false), deadline })
    }

    /// Runs the program on `record`, blocking for at most its deadline.
    pub fn apply(&self, record: &Record) -> Result<Record, String> {
        if self.stuck.load(Ordering::Relaxed) {
            return Err(format!(
                "the transform is off: an earlier record ran over {:?}; fix the program and restart",
                self.deadline
            ));
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.runner()?.send((record.clone(), reply)).map_err(|_| "the transform's thread has stopped".to_owned())?;
        match answer.recv_timeout(self.deadline) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.stuck.store(true, Ordering::Relaxed);
                tracing::error!(
                    deadline = ?self.deadline,
                    "a partner transform ran over its deadline: it is off until the process restarts"
                );
                Err(format!("the transform did not finish within {:?}", self.deadline))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("the transform's thread has stopped".into()),
        }
    }

    fn runner(&self) -> Result<mpsc::Sender<Job>, String> {
        let mut runner = self.runner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sender) = runner.as_ref() {
            return Ok(sender.clone());
        }
        let (sender, jobs) = mpsc::channel::<Job>();
        let code = self.code.clone();
        std::thread::Builder::new()
            .name("partner-transform".into())
            .spawn(move || {
                // Compiled here: jaq's programs are not `Send`.
                let program = Program::compile(&code).expect("compiled at start");
                for (record, reply) in jobs {
                    let _ = reply.send(program.run(&record));
                }
            })
            .map_err(|e| format!("the transform's thread did not start: {e}"))?;
        *runner = Some(sender.clone());
        Ok(sender)
    }
}

/// A compiled program.
struct Program(jaq_core::compile::Filter<Native<Data>>);

/// Natives left out: they read the environment, the clock or more input.
const WITHHELD: &[&str] = &["env", "now", "input", "stderr_empty", "debug_empty"];

fn quiet(_: Cv<'_, Data>) -> ValXs<'_, Val> {
    Box::new(std::iter::empty())
}

fn natives() -> impl Iterator<Item = Fun<Data>> {
    jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(|f| !WITHHELD.contains(&f.0))
        // The library's `debug` and `stderr` are defined over these two.
        .chain(["stderr_empty", "debug_empty"].map(|name| (name, Box::new([]) as Box<[_]>, Native::<Data>::new(quiet))))
}

impl Program {
    fn compile(code: &str) -> Result<Self, String> {
        let at = |found: &str| load::span(code, found).start + 1;
        let tokens = Lexer::new(code).lex().map_err(|errors| {
            let (expect, found) = &errors[0];
            format!("does not parse: expected {} at character {}", expect.as_str(), at(found))
        })?;
        if defines(&tokens) {
            return Err("may not define functions (`def`): a transform cannot recurse".into());
        }
        let arena = Arena::default();
        let loader = Loader::new(jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs()));
        let modules = loader.load(&arena, File { code, path: () }).map_err(|errors| {
            let why = match errors.into_iter().next().map(|(_, e)| e) {
                Some(load::Error::Parse(errors)) => {
                    errors.first().map(|(e, found)| format!("expected {} at character {}", e.as_str(), at(found)))
                }
                Some(load::Error::Lex(errors)) => {
                    errors.first().map(|(e, found)| format!("expected {} at character {}", e.as_str(), at(found)))
                }
                Some(load::Error::Io(errors)) => errors.first().map(|(_, e)| format!("reads no files ({e})")),
                None => None,
            };
            format!("does not parse: {}", why.unwrap_or_default())
        })?;
        let filter = Compiler::default().with_funs(natives()).compile(modules).map_err(|errors| {
            let unknown: Vec<String> =
                errors.into_iter().flat_map(|(_, e)| e).map(|(name, _)| name.to_string()).collect();
            format!("does not compile: unknown {}", unknown.join(", "))
        })?;
        Ok(Self(filter))
    }

    fn run(&self, record: &Record) -> Result<Record, String> {
        let input = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        let input = jaq_json::read::parse_single(&input).map_err(|e| e.to_string())?;
        let ctx = Ctx::<Data>::new(&self.0.lut, Vars::new([]));
        let mut outputs = self.0.id.run((ctx, input));
        let first = match outputs.next() {
            None => return Err("gave no record: one record in, one record out".into()),
            Some(Ok(value)) => value,
            Some(Err(exn)) => {
                return Err(match exn.get_err() {
                    // `error("text")` shows as the text, not as a JSON string.
                    Ok(error) => {
                        let text = error.to_string();
                        format!("failed: {}", serde_json::from_str::<String>(&text).unwrap_or(text))
                    }
                    Err(_) => "halted".into(),
                });
            }
        };
        if outputs.next().is_some() {
            return Err("gave more than one record: one record in, one record out".into());
        }
        let value: serde_json::Value =
            serde_json::from_str(&first.to_string()).map_err(|_| "gave a value that is not JSON".to_owned())?;
        let serde_json::Value::Object(object) = value else {
            return Err(format!("gave {value}, not a record (an object)"));
        };
        let mut out = Record::new();
        for (name, value) in object {
            let text = match value {
                serde_json::Value::Null => continue,
                serde_json::Value::String(text) => text,
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => value.to_string(),
                other => return Err(format!("gave {name}: {other}, which is neither text nor a number")),
            };
            out.insert(name, text);
        }
        Ok(out)
    }
}

/// Whether `tokens` hold the `def` keyword (outside strings).
fn defines(tokens: &[load::lex::Token<&str>]) -> bool {
    tokens.iter().any(|load::lex::Token(text, tok)| match tok {
        Tok::Word => *text == "def",
        Tok::Block(inner) => defines(inner),
        Tok::Str(parts) => parts.iter().any(|part| match part {
            load::lex::StrPart::Term(inner) => defines(std::slice::from_ref(inner)),
            _ => false,
        }),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&str, &str)]) -> Record {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_program_reshapes_a_record_and_numbers_become_text() {
        let t = Transform::compile(
            r#"{external_ref: .Bestellung, sku: (.Artikel | ascii_upcase), quantity: (.Menge | tonumber * 2),
                ship_to_country: (if .Land == "Deutschland" then "DE" else .Land end), note: null}"#,
        )
        .expect("compiles");
        let out = t
            .apply(&record(&[("Bestellung", "PO-1"), ("Artikel", "acme-7"), ("Menge", "3"), ("Land", "Deutschland")]))
            .expect("runs");
        assert_eq!(
            out,
            record(&[("external_ref", "PO-1"), ("sku", "ACME-7"), ("quantity", "6"), ("ship_to_country", "DE")])
        );
    }

    #[test]
    fn what_a_program_may_not_do_is_refused_at_start() {
        for (code, why) in [
            (".foo(", "does not parse"),
            ("nosuch", "unknown nosuch"),
            ("env", "unknown env"),
            ("$ENV", "unknown $ENV"),
            ("now", "unknown now"),
            ("input", "unknown input"),
            ("def f: 1 + f; f", "may not define functions"),
            ("[.[] | def g: .; g]", "may not define functions"),
            (r#"import "x" as x; ."#, "does not parse"),
        ] {
            let err = Transform::compile(code).expect_err(code);
            assert!(err.contains(why), "{code}: {err}");
        }
        // `def` inside a string is text, not a definition.
        Transform::compile(r#".note = "def""#).expect("a string");
    }

    #[test]
    fn a_run_that_fails_halts_or_gives_other_than_one_record_is_an_error() {
        for (code, why) in [
            (r#"error("no such order")"#, "failed: no such order"),
            ("halt_error", "halted"),
            ("empty", "gave no record"),
            (".,.", "more than one record"),
            (".Menge", "not a record"),
            ("{a: [1]}", "neither text nor a number"),
            (".Menge | tonumber", "failed"),
        ] {
            let t = Transform::compile(code).expect(code);
            let err = t.apply(&record(&[("Menge", "zwei")])).expect_err(code);
            assert!(err.contains(why), "{code}: {err}");
        }
    }

    #[test]
    fn a_run_over_the_deadline_fails_and_turns_the_transform_off() {
        let t = Transform::with_deadline("last(repeat(1))", Duration::from_millis(100)).expect("compiles");
        let err = t.apply(&record(&[])).expect_err("runs forever");
        assert!(err.contains("did not finish"), "{err}");
        let err = t.apply(&record(&[])).expect_err("off");
        assert!(err.contains("the transform is off"), "{err}");
    }
}
