//! Where each byte of a normalized view came from, kept per stretch rather than per byte.
//!
//! A view byte's original offset is needed only for the few bytes a signal starts or ends
//! on, yet a table of one `u32` per byte was written for every byte of every text: four
//! bytes of memory traffic per byte scanned, the largest single cost of building the
//! views. Here a run of bytes that came from consecutive original bytes (an ASCII word,
//! a line copied as it is) is one entry, and so are the bytes of one character's
//! normalized form, which all come from that character. Lookups search the entries.

/// Original byte offsets of a view's bytes: `get(i)` is where view byte `i` came from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Offsets {
    runs: Vec<Run>,
    len: u32,
}

/// View bytes from `view` up to the next run's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// First view byte of the run.
    view: u32,
    /// Original offset of that byte.
    orig: u32,
    /// Each later byte came from the next original byte (an ASCII stretch); otherwise all
    /// came from `orig` (one character's normalized form).
    step: bool,
}

impl Offsets {
    /// How many view bytes are mapped.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no view byte is mapped.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The original offset of view byte `i`.
    ///
    /// # Panics
    /// If `i` is not below [`Offsets::len`], like indexing a slice.
    pub fn get(&self, i: usize) -> u32 {
        self.cursor().get(i)
    }

    /// A reader for many lookups in increasing order (each then costs no search).
    pub fn cursor(&self) -> Cursor<'_> {
        Cursor {
            offsets: self,
            run: 0,
        }
    }

    /// Forgets every byte, keeping the memory.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.len = 0;
    }

    /// Keeps only the first `len` view bytes.
    pub fn truncate(&mut self, len: usize) {
        // Called for every word, mostly to its own length: no early return to mispredict.
        let len = (len as u32).min(self.len);
        while self.runs.last().is_some_and(|r| r.view >= len) {
            self.runs.pop();
        }
        self.len = len;
    }

    /// One view byte, from original offset `orig`.
    #[inline]
    pub fn push(&mut self, orig: u32) {
        if let Some(last) = self.runs.last()
            && (last.step && last.orig + (self.len - last.view) == orig
                || !last.step && last.orig == orig)
        {
            self.len += 1;
            return;
        }
        self.start_run(orig, true, 1);
    }

    /// `n` view bytes from the `n` original bytes at `orig`.
    #[inline]
    pub fn push_step(&mut self, orig: u32, n: usize) {
        match n {
            0 => {}
            1 => self.push(orig),
            _ => {
                if let Some(last) = self.runs.last()
                    && last.step
                    && last.orig + (self.len - last.view) == orig
                {
                    self.len += n as u32;
                    return;
                }
                self.start_run(orig, true, n);
            }
        }
    }

    /// `n` view bytes, all from original offset `orig` (one character, normalized).
    #[inline]
    pub fn push_same(&mut self, orig: u32, n: usize) {
        match n {
            0 => {}
            1 => self.push(orig),
            _ => {
                if let Some(last) = self.runs.last()
                    && !last.step
                    && last.orig == orig
                {
                    self.len += n as u32;
                    return;
                }
                self.start_run(orig, false, n);
            }
        }
    }

    fn start_run(&mut self, orig: u32, step: bool, n: usize) {
        self.runs.push(Run {
            view: self.len,
            orig,
            step,
        });
        self.len += n as u32;
    }
}

/// Lookups in one [`Offsets`], fastest in increasing order: the cursor stays on the run
/// of the last lookup and walks forward from it (a lookup behind it searches again).
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    offsets: &'a Offsets,
    /// Index of the run the last lookup fell in.
    run: usize,
}

impl Cursor<'_> {
    /// Moves to the run holding view byte `i` (which must be mapped).
    #[inline]
    fn seek(&mut self, i: u32) {
        let runs = &self.offsets.runs;
        // A few runs ahead are walked to; further, or behind, are searched for.
        const WALK: usize = 8;
        let far = runs.get(self.run + WALK).is_some_and(|r| r.view <= i);
        if far || runs[self.run].view > i {
            self.run = runs.partition_point(|r| r.view <= i) - 1;
            return;
        }
        while runs.get(self.run + 1).is_some_and(|r| r.view <= i) {
            self.run += 1;
        }
    }

    /// Where the run at `index` ends in the view.
    fn run_end(&self, index: usize) -> u32 {
        (self.offsets.runs.get(index + 1)).map_or(self.offsets.len, |r| r.view)
    }

    /// The original offset of view byte `i`.
    ///
    /// # Panics
    /// If `i` is not below [`Offsets::len`], like indexing a slice.
    #[inline]
    pub fn get(&mut self, i: usize) -> u32 {
        assert!(
            i < self.offsets.len(),
            "view byte {i} of {}",
            self.offsets.len
        );
        let i = i as u32;
        self.seek(i);
        let run = self.offsets.runs[self.run];
        if run.step {
            run.orig + (i - run.view)
        } else {
            run.orig
        }
    }

    /// The original offsets of view bytes `range`, in order.
    ///
    /// # Panics
    /// If `range` reaches past [`Offsets::len`], like slicing.
    pub fn origins(&mut self, range: std::ops::Range<usize>) -> impl Iterator<Item = u32> + '_ {
        let len = self.offsets.len;
        assert!(range.end <= len as usize, "view bytes {range:?} of {len}");
        let (mut i, end) = (range.start as u32, range.end as u32);
        if i < end {
            self.seek(i);
        }
        std::iter::from_fn(move || {
            if i >= end {
                return None;
            }
            // Every run holds at least one byte: the next byte is in this run or the next.
            if self.run_end(self.run) <= i {
                self.run += 1;
            }
            let run = self.offsets.runs[self.run];
            let orig = if run.step {
                run.orig + (i - run.view)
            } else {
                run.orig
            };
            i += 1;
            Some(orig)
        })
    }

    /// Appends the offsets of view bytes `range` to `out`, a run at a time.
    ///
    /// # Panics
    /// If `range` reaches past [`Offsets::len`], like slicing.
    pub fn copy_to(&mut self, range: std::ops::Range<usize>, out: &mut Offsets) {
        if range.is_empty() {
            return;
        }
        let len = self.offsets.len;
        assert!(range.end <= len as usize, "view bytes {range:?} of {len}");
        let (start, end) = (range.start as u32, range.end as u32);
        self.seek(start);
        loop {
            let run = self.offsets.runs[self.run];
            let from = run.view.max(start);
            let to = self.run_end(self.run).min(end);
            let n = (to - from) as usize;
            if run.step {
                out.push_step(run.orig + (from - run.view), n);
            } else {
                out.push_same(run.orig, n);
            }
            if to == end {
                return;
            }
            self.run += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same offsets as a plain table, to compare with.
    fn table(o: &Offsets) -> Vec<u32> {
        (0..o.len()).map(|i| o.get(i)).collect()
    }

    #[test]
    fn runs_read_back_as_a_table() {
        let mut o = Offsets::default();
        o.push(0); // "\n"
        o.push_step(0, 5); // "hello" at 0..5
        o.push(5); // separator
        o.push_same(7, 3); // one character at 7, three bytes
        o.push(7); // and another of its bytes
        o.push_step(10, 2);
        o.push(20);
        assert_eq!(table(&o), [0, 0, 1, 2, 3, 4, 5, 7, 7, 7, 7, 10, 11, 20]);
        o.truncate(9);
        assert_eq!(table(&o), [0, 0, 1, 2, 3, 4, 5, 7, 7]);
        o.push_step(8, 3);
        assert_eq!(table(&o), [0, 0, 1, 2, 3, 4, 5, 7, 7, 8, 9, 10]);
        o.truncate(0);
        assert!(o.is_empty());
        o.push(4);
        assert_eq!(table(&o), [4]);
    }

    #[test]
    fn a_stretch_copies_with_its_offsets() {
        let mut o = Offsets::default();
        o.push_step(100, 4);
        o.push_same(200, 4);
        o.push_step(300, 4);
        let all = table(&o);
        for start in 0..=o.len() {
            for end in start..=o.len() {
                let mut copy = Offsets::default();
                copy.push(1);
                o.cursor().copy_to(start..end, &mut copy);
                let mut want = vec![1];
                want.extend_from_slice(&all[start..end]);
                assert_eq!(table(&copy), want, "{start}..{end}");
            }
        }
    }

    #[test]
    fn a_cursor_reads_forwards_and_back() {
        let mut o = Offsets::default();
        for k in 0..50u32 {
            o.push_step(k * 10, 3);
            o.push_same(k * 10 + 5, 2);
        }
        let all = table(&o);
        let mut cursor = o.cursor();
        let order = (0..o.len())
            .chain((0..o.len()).rev())
            .chain([7, 200, 3, 249, 0]);
        for i in order {
            assert_eq!(cursor.get(i), all[i], "{i}");
        }
        for start in 0..o.len() {
            for end in [start, start + 1, (start + 7).min(o.len()), o.len()] {
                let got: Vec<u32> = o.cursor().origins(start..end).collect();
                assert_eq!(got, all[start..end], "{start}..{end}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "view byte 3 of 3")]
    fn reading_past_the_end_panics_like_a_slice() {
        let mut o = Offsets::default();
        o.push_step(0, 3);
        o.get(3);
    }
}
