//! What Redis is known to hold of one hash the writer keeps (`ob:`, `tr:`, `feat:`, `bbo:`),
//! field by field, so that a write carries only the fields whose text changed (issue 11: most
//! fields of a symbol's hashes repeat from one burst to the next).
//!
//! Each field's text is printed into the memo ([`HashMemo::set`]); the `HSET` then carries the
//! fields that differ from what Redis holds. Leaving a field out is exact: Redis holds the very
//! text the field has now, so the hash is whole and consistent at the new state, and one
//! `HSET` is atomic. A memo is only as good as what it says Redis holds: its owner forgets it
//! ([`HashMemo::forget`], everything goes again) whenever the hash may hold anything else — a
//! pipeline that failed or got no reply, a reconnect (Redis may have restarted), any other
//! command on the key (a stale mark, a re-anchor's swap). What it cannot see coming (Redis
//! emptied while connected, the key evicted or deleted) shows in the reply: an `HSET` that left
//! fields out creates none while Redis holds the hash, so the writer takes a reply above 0 as
//! the hash lost and writes everything of the symbol whole again (`PartialHsets` in
//! [`super::state`]). The writer keeps at most one pipeline
//! in flight per connection and builds the next only after the reply, so a memo recorded when
//! its `HSET` was built is known to have landed by the time the next is built, unless the
//! pipeline failed (then the memo was forgotten).
//!
//! The field texts are printed into reused strings: no allocation per field once grown. A field
//! printed from numbers ([`HashMemo::set_int`], [`HashMemo::set_decimal`], ...) is keyed by
//! them: when they equal the ones its held text was printed from, it is neither printed nor
//! compared (the text is a function of them).

use sbe_runtime::Decimal;

/// The numbers a field's text is printed from (the text is a function of them, for the field).
type Key = [i64; 3];

/// The fields of one hash as Redis is known to hold them (`Default`: a memo of no fields, a
/// placeholder while one is taken out to be filled).
#[derive(Debug, Default)]
pub struct HashMemo {
    names: &'static [&'static str],
    /// Each field's text as last set (when `known`: as Redis holds it, or as the next `HSET`
    /// will write it).
    held: Vec<String>,
    /// The key each held text was printed from, when it was printed from one.
    keys: Vec<Option<Key>>,
    /// Fields set since the last `HSET` with a text Redis is not known to hold.
    changed: Vec<bool>,
    /// `held` is what Redis holds (but for the `changed` fields).
    known: bool,
    scratch: String,
}

impl HashMemo {
    /// A memo of the hash of fields `names`, nothing known.
    pub fn new(names: &'static [&'static str]) -> HashMemo {
        HashMemo {
            names,
            held: vec![String::new(); names.len()],
            keys: vec![None; names.len()],
            changed: vec![false; names.len()],
            known: false,
            scratch: String::new(),
        }
    }

    /// Redis may hold anything else: the next `HSET` carries every field.
    pub fn forget(&mut self) {
        self.known = false;
    }

    /// Whether Redis is known to hold the fields (the next `HSET` may leave some out).
    pub fn known(&self) -> bool {
        self.known
    }

    /// Field `at`'s text now is what `print` appends to an empty string; it goes with the next
    /// `HSET` unless Redis is known to hold exactly that text.
    pub fn set(&mut self, at: usize, print: impl FnOnce(&mut String)) {
        self.scratch.clear();
        print(&mut self.scratch);
        let Some(held) = self.held.get_mut(at) else {
            return;
        };
        if !self.known || self.changed[at] || *held != self.scratch {
            std::mem::swap(held, &mut self.scratch);
            self.changed[at] = true;
        }
        self.keys[at] = None;
    }

    /// Field `at`'s text now is what `print` appends to an empty string, a function of `key`:
    /// when Redis is known to hold the text printed from the same key, nothing is done; else
    /// it is printed and goes with the next `HSET`.
    pub fn set_keyed(&mut self, at: usize, key: Key, print: impl FnOnce(&mut String)) {
        let Some(held) = self.held.get_mut(at) else {
            return;
        };
        if self.known && !self.changed[at] && self.keys[at] == Some(key) {
            return;
        }
        held.clear();
        print(held);
        self.keys[at] = Some(key);
        self.changed[at] = true;
    }

    /// [`HashMemo::set`] with a given text.
    pub fn set_str(&mut self, at: usize, text: &str) {
        self.set(at, |out| out.push_str(text));
    }

    /// Field `at`'s text now is the integer `value`.
    pub fn set_int(&mut self, at: usize, value: i64) {
        self.set_keyed(at, [value, 0, 0], |out| push_int(out, value));
    }

    /// Field `at`'s text now is `1` when `on`, else `0`.
    pub fn set_flag(&mut self, at: usize, on: bool) {
        let text = if on { "1" } else { "0" };
        self.set_keyed(at, [i64::from(on), 0, 0], |out| out.push_str(text));
    }

    /// Field `at`'s text now is empty.
    pub fn set_empty(&mut self, at: usize) {
        self.set_keyed(at, [0, i64::MIN, 1], |_| {});
    }

    /// Field `at`'s text now is the integer `value`, empty when `None`.
    pub fn set_opt_int(&mut self, at: usize, value: Option<i64>) {
        let key = value.map_or([0, i64::MIN, 0], |v| [v, 0, 0]);
        self.set_keyed(at, key, |out| {
            if let Some(v) = value {
                push_int(out, v);
            }
        });
    }

    /// Field `at`'s text now is the decimal `value`'s, empty when `None`.
    pub fn set_decimal(&mut self, at: usize, value: Option<Decimal>) {
        let key = match value {
            Some(d) => [d.mantissa, i64::from(d.exponent), 0],
            None => [0, i64::MIN, 0],
        };
        self.set_keyed(at, key, |out| {
            if let Some(d) = value {
                d.push_to(out);
            }
        });
    }

    /// Whether a field waits to be written.
    pub fn pending(&self) -> bool {
        self.changed.iter().any(|c| *c)
    }

    /// Calls `f` with each field set since the last call whose text Redis is not known to hold,
    /// in the order of the names, and takes Redis to hold them from now on (the owner forgets
    /// the memo when the write fails). Nothing known before: every field must have been set
    /// (a partial `HSET` would make a partial hash); if one was not, the memo stays unknown.
    pub fn drain(&mut self, mut f: impl FnMut(&'static str, &str)) {
        let whole = self.changed.iter().all(|c| *c);
        for ((name, text), changed) in self.names.iter().zip(&self.held).zip(&mut self.changed) {
            if std::mem::take(changed) {
                f(name, text);
            }
        }
        self.known = self.known || whole;
    }

    /// The `HSET` of `key` with the fields [`HashMemo::drain`] gives; `None` when none changed.
    pub fn hset(&mut self, key: &str) -> Option<redis::Cmd> {
        if !self.pending() {
            return None;
        }
        // Sized up front: grown arg by arg, the command's buffer was reallocated several times
        // a write (a tenth of the writer's samples at 200 symbols).
        let (mut args, mut bytes) = (2, 4 + key.len());
        for ((name, text), _) in self
            .names
            .iter()
            .zip(&self.held)
            .zip(&self.changed)
            .filter(|(_, c)| **c)
        {
            args += 2;
            bytes += name.len() + text.len();
        }
        let mut cmd = redis::Cmd::with_capacity(args, bytes);
        cmd.arg("HSET").arg(key);
        self.drain(|name, text| {
            cmd.arg(name).arg(text);
        });
        Some(cmd)
    }

    /// The fields [`HashMemo::drain`] gives, owned (the re-anchor's new state, tests).
    pub fn fields(&mut self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(self.names.len());
        self.drain(|name, text| out.push((name, text.to_string())));
        out
    }
}

/// Appends `value` in decimal (the SBE decimal's printer at exponent 0, without the formatting
/// machinery).
pub fn push_int(out: &mut String, value: i64) {
    Decimal::new(value, 0).push_to(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["a", "b", "c"];

    fn set_all(memo: &mut HashMemo, values: [&str; 3]) {
        for (at, v) in values.iter().enumerate() {
            memo.set_str(at, v);
        }
    }

    #[test]
    fn only_fields_that_differ_from_what_redis_holds_go() {
        let mut memo = HashMemo::new(NAMES);
        set_all(&mut memo, ["1", "2", "3"]);
        assert_eq!(
            memo.fields(),
            [("a", "1".into()), ("b", "2".into()), ("c", "3".into())]
        );
        assert!(memo.known());
        set_all(&mut memo, ["1", "5", "3"]);
        assert_eq!(memo.fields(), [("b", "5".to_string())]);
        // Nothing changed: no command.
        set_all(&mut memo, ["1", "5", "3"]);
        assert!(!memo.pending());
        assert!(memo.hset("k").is_none());
        // A change set twice before the write: the last text goes, once; one set back to what
        // Redis holds still goes (the memo holds the text of the write being built).
        memo.set_str(0, "7");
        memo.set_str(0, "8");
        memo.set_str(2, "9");
        memo.set_str(2, "3");
        assert_eq!(memo.fields(), [("a", "8".into()), ("c", "3".into())]);
    }

    #[test]
    fn a_forgotten_memo_writes_every_field_and_a_partial_first_write_stays_unknown() {
        let mut memo = HashMemo::new(NAMES);
        set_all(&mut memo, ["1", "2", "3"]);
        let _ = memo.fields();
        memo.forget();
        set_all(&mut memo, ["1", "2", "3"]);
        assert_eq!(
            memo.fields().len(),
            3,
            "every field again, unchanged as they are"
        );
        memo.forget();
        memo.set_str(1, "2");
        assert_eq!(memo.fields(), [("b", "2".to_string())]);
        assert!(
            !memo.known(),
            "a write of one field does not make the hash known"
        );
        set_all(&mut memo, ["1", "2", "3"]);
        assert_eq!(memo.fields().len(), 3);
    }

    #[test]
    fn the_hset_carries_the_changed_fields() {
        let mut memo = HashMemo::new(NAMES);
        set_all(&mut memo, ["1", "2", "3"]);
        let _ = memo.fields();
        memo.set_int(2, -45);
        let cmd = memo.hset("k").expect("a change");
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(args, [&b"HSET"[..], b"k", b"c", b"-45"]);
    }

    /// A keyed field is printed only when its key differs from the one Redis holds the text
    /// of; a forgotten memo prints and writes it again.
    #[test]
    fn keyed_fields_go_when_their_key_changed_or_nothing_is_known() {
        let mut memo = HashMemo::new(NAMES);
        memo.set_int(0, 5);
        memo.set_decimal(1, Some(Decimal::new(125, -2)));
        memo.set_decimal(2, None);
        assert_eq!(
            memo.fields(),
            [
                ("a", "5".into()),
                ("b", "1.25".into()),
                ("c", String::new())
            ]
        );
        let mut printed = false;
        memo.set_keyed(0, [5, 0, 0], |_| printed = true);
        assert!(
            !printed && !memo.pending(),
            "the same key: not even printed"
        );
        memo.set_decimal(1, Some(Decimal::new(125, -3)));
        memo.set_opt_int(2, Some(0));
        assert_eq!(memo.fields(), [("b", "0.125".into()), ("c", "0".into())]);
        // A text field set over a keyed one drops its key; the next keyed set prints again.
        memo.set_str(0, "x");
        memo.set_int(0, 5);
        assert_eq!(memo.fields(), [("a", "5".to_string())]);
        memo.forget();
        memo.set_int(0, 5);
        memo.set_flag(1, true);
        memo.set_empty(2);
        assert_eq!(
            memo.fields(),
            [("a", "5".into()), ("b", "1".into()), ("c", String::new())]
        );
    }

    #[test]
    fn integers_print_as_display_does() {
        for v in [0, 7, -7, 10, 1_763_700_000_000_000, i64::MAX, i64::MIN] {
            let mut out = String::from("x");
            push_int(&mut out, v);
            assert_eq!(out, format!("x{v}"));
        }
    }
}
