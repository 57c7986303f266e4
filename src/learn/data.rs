//! Interaction data: MMRec `.inter` files (3 or 6 columns, `x_label` split), the store's
//! interactions table (per-user time split), id maps, and per-user item lists.

use super::{LearnError, Result};
use std::collections::HashMap;
use std::path::Path;

/// Dense 0-based user/item ids and the three splits, each a list of (user, item) pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interactions {
    pub n_users: usize,
    pub n_items: usize,
    pub train: Vec<(u32, u32)>,
    pub valid: Vec<(u32, u32)>,
    pub test: Vec<(u32, u32)>,
}

/// External ids (store user / sku strings) for the dense ids used in training.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdMaps {
    pub users: Vec<String>,
    pub items: Vec<String>,
    pub user_index: HashMap<String, u32>,
    pub item_index: HashMap<String, u32>,
}

impl IdMaps {
    fn intern(names: &mut Vec<String>, index: &mut HashMap<String, u32>, key: &str) -> u32 {
        if let Some(&i) = index.get(key) {
            return i;
        }
        let i = names.len() as u32;
        names.push(key.to_string());
        index.insert(key.to_string(), i);
        i
    }
    pub fn user(&mut self, key: &str) -> u32 {
        Self::intern(&mut self.users, &mut self.user_index, key)
    }
    pub fn item(&mut self, key: &str) -> u32 {
        Self::intern(&mut self.items, &mut self.item_index, key)
    }
}

/// Per-user sorted, de-duplicated item lists (CSR layout): train masks, negative sampling, targets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserItems {
    indptr: Vec<usize>,
    items: Vec<u32>,
}

impl UserItems {
    /// Builds the lists of `n_users` users from (user, item) pairs; pairs with user >= n_users are ignored.
    pub fn from_pairs(n_users: usize, pairs: &[(u32, u32)]) -> Self {
        let mut counts = vec![0usize; n_users + 1];
        for &(u, _) in pairs {
            if (u as usize) < n_users {
                counts[u as usize + 1] += 1;
            }
        }
        for i in 0..n_users {
            counts[i + 1] += counts[i];
        }
        let mut fill = counts.clone();
        let mut items = vec![0u32; counts[n_users]];
        for &(u, i) in pairs {
            if (u as usize) < n_users {
                items[fill[u as usize]] = i;
                fill[u as usize] += 1;
            }
        }
        // sort + dedup each row, then compact
        let mut indptr = Vec::with_capacity(n_users + 1);
        indptr.push(0);
        let mut out = Vec::with_capacity(items.len());
        for u in 0..n_users {
            let row = &mut items[counts[u]..counts[u + 1]];
            row.sort_unstable();
            let mut last = None;
            for &i in row.iter() {
                if last != Some(i) {
                    out.push(i);
                    last = Some(i);
                }
            }
            indptr.push(out.len());
        }
        Self { indptr, items: out }
    }

    pub fn n_users(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// Sorted items of user `u` (empty for an unknown user).
    pub fn get(&self, u: usize) -> &[u32] {
        if u + 1 >= self.indptr.len() {
            return &[];
        }
        &self.items[self.indptr[u]..self.indptr[u + 1]]
    }

    pub fn contains(&self, u: usize, item: u32) -> bool {
        self.get(u).binary_search(&item).is_ok()
    }

    /// Total number of (user, item) pairs.
    pub fn nnz(&self) -> usize {
        self.items.len()
    }
}

impl Interactions {
    pub fn train_by_user(&self) -> UserItems {
        UserItems::from_pairs(self.n_users, &self.train)
    }
    pub fn valid_by_user(&self) -> UserItems {
        UserItems::from_pairs(self.n_users, &self.valid)
    }
    pub fn test_by_user(&self) -> UserItems {
        UserItems::from_pairs(self.n_users, &self.test)
    }

    /// Checks ids against `n_users` / `n_items` and that there is something to train on.
    pub fn validate(&self) -> Result<()> {
        if self.train.is_empty() {
            return Err(LearnError::Invalid("no training interactions".into()));
        }
        for &(u, i) in self.train.iter().chain(&self.valid).chain(&self.test) {
            if u as usize >= self.n_users || i as usize >= self.n_items {
                return Err(LearnError::Invalid(format!(
                    "pair ({u}, {i}) out of range ({} users, {} items)",
                    self.n_users, self.n_items
                )));
            }
        }
        Ok(())
    }

    /// Builds interactions from the store's events (see [`Interactions::from_timed`]).
    pub fn from_events(events: &[crate::store::Event], valid_per_user: usize, test_per_user: usize) -> (Self, IdMaps) {
        let triples: Vec<(&str, &str, i64)> =
            events.iter().map(|e| (e.user.as_str(), e.sku.as_str(), e.ts_ms)).collect();
        Self::from_timed(&triples, valid_per_user, test_per_user)
    }

    /// Builds interactions from (user, sku, time) triples (any order): pairs are
    /// de-duplicated per (user, sku) keeping the earliest; per user in time order the last
    /// `test_per_user` pairs are test, the `valid_per_user` before them valid, the rest train.
    /// A user with no more than `valid_per_user + test_per_user` pairs is all train (as in the
    /// H&M sample's split). Ids are dense in order of first appearance in time order.
    pub fn from_timed<'a>(
        events: &[(&'a str, &'a str, i64)],
        valid_per_user: usize,
        test_per_user: usize,
    ) -> (Self, IdMaps) {
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by(|&a, &b| events[a].2.cmp(&events[b].2).then(a.cmp(&b)));
        let mut maps = IdMaps::default();
        let mut seen = std::collections::HashSet::new();
        let mut per_user: Vec<Vec<u32>> = Vec::new();
        for &k in &order {
            let (user, sku, _) = events[k];
            let u = maps.user(user);
            let i = maps.item(sku);
            if per_user.len() <= u as usize {
                per_user.resize(u as usize + 1, Vec::new());
            }
            if seen.insert((u, i)) {
                per_user[u as usize].push(i);
            }
        }
        let mut out = Interactions { n_users: maps.users.len(), n_items: maps.items.len(), ..Default::default() };
        let held = valid_per_user + test_per_user;
        for (u, items) in per_user.iter().enumerate() {
            let u = u as u32;
            let n = items.len();
            if n <= held {
                out.train.extend(items.iter().map(|&i| (u, i)));
                continue;
            }
            let (tr, rest) = items.split_at(n - held);
            let (va, te) = rest.split_at(valid_per_user);
            out.train.extend(tr.iter().map(|&i| (u, i)));
            out.valid.extend(va.iter().map(|&i| (u, i)));
            out.test.extend(te.iter().map(|&i| (u, i)));
        }
        (out, maps)
    }
}

/// Reads an MMRec `.inter` file: tab (or whitespace) separated, header naming at least
/// `userID`, `itemID` and `x_label` (0 train, 1 valid, 2 test); extra columns are ignored.
/// `n_users` / `n_items` are max id + 1 over all rows.
pub fn load_inter(path: &Path) -> Result<Interactions> {
    let text = std::fs::read_to_string(path).map_err(|source| LearnError::Io { path: path.to_path_buf(), source })?;
    parse_inter(&text).map_err(|msg| {
        tracing::warn!(path = %path.display(), error = %msg, "bad .inter file");
        LearnError::Data { path: path.to_path_buf(), msg }
    })
}

/// Parses the text of an `.inter` file (see [`load_inter`]); errors name the line.
pub fn parse_inter(text: &str) -> std::result::Result<Interactions, String> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or("empty file")?;
    let cols: Vec<&str> = split_fields(header);
    let find = |name: &str| cols.iter().position(|c| c.eq_ignore_ascii_case(name));
    let (cu, ci, cx) = match (find("userID"), find("itemID"), find("x_label")) {
        (Some(u), Some(i), Some(x)) => (u, i, x),
        _ => return Err(format!("header must name userID, itemID and x_label, got {header:?}")),
    };
    let need = cu.max(ci).max(cx) + 1;
    let mut out = Interactions::default();
    let (mut max_u, mut max_i) = (None::<u32>, None::<u32>);
    for (lineno, line) in lines {
        let f = split_fields(line);
        if f.len() < need {
            return Err(format!("line {}: expected {} columns, got {}", lineno + 1, cols.len(), f.len()));
        }
        let parse =
            |s: &str, what: &str| s.parse::<u32>().map_err(|_| format!("line {}: bad {what} {s:?}", lineno + 1));
        let u = parse(f[cu], "userID")?;
        let i = parse(f[ci], "itemID")?;
        let x = parse(f[cx], "x_label")?;
        max_u = max_u.max(Some(u));
        max_i = max_i.max(Some(i));
        match x {
            0 => out.train.push((u, i)),
            1 => out.valid.push((u, i)),
            2 => out.test.push((u, i)),
            _ => return Err(format!("line {}: x_label must be 0, 1 or 2, got {x}", lineno + 1)),
        }
    }
    out.n_users = max_u.map_or(0, |m| m as usize + 1);
    out.n_items = max_i.map_or(0, |m| m as usize + 1);
    if out.train.is_empty() {
        return Err("no training rows (x_label 0)".into());
    }
    Ok(out)
}

fn split_fields(line: &str) -> Vec<&str> {
    if line.contains('\t') {
        line.split('\t').map(str::trim).collect()
    } else {
        line.split_whitespace().collect()
    }
}

/// Resolves `--data`: a `.inter` file, or a folder holding exactly one `*.inter` file.
pub fn find_inter(path: &Path) -> Result<std::path::PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let rd = std::fs::read_dir(path).map_err(|source| LearnError::Io { path: path.to_path_buf(), source })?;
    let mut found: Vec<_> =
        rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "inter")).collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(LearnError::Data { path: path.to_path_buf(), msg: "no .inter file in this folder".into() }),
        _ => Err(LearnError::Data { path: path.to_path_buf(), msg: format!("several .inter files: {found:?}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_three_and_six_columns() {
        let a = parse_inter("userID\titemID\tx_label\n0\t0\t0\n0\t3\t1\n2\t1\t2\n").unwrap();
        assert_eq!((a.n_users, a.n_items), (3, 4));
        assert_eq!(a.train, vec![(0, 0)]);
        assert_eq!(a.valid, vec![(0, 3)]);
        assert_eq!(a.test, vec![(2, 1)]);
        let b = parse_inter(
            "userID\titemID\ttimestamp\tprice\tsales_channel_id\tx_label\n0\t1874\t1587254400\t0.05\t2\t0\n1\t3\t1\t0.1\t2\t2\n",
        )
        .unwrap();
        assert_eq!(b.train, vec![(0, 1874)]);
        assert_eq!(b.test, vec![(1, 3)]);
        assert_eq!(b.n_items, 1875);
    }

    #[test]
    fn bad_rows_name_the_line() {
        let e = parse_inter("userID\titemID\tx_label\n0\t0\t0\n0\tx\t0\n").unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        let e = parse_inter("userID\titemID\tx_label\n0\t0\t7\n").unwrap_err();
        assert!(e.contains("x_label"), "{e}");
        assert!(parse_inter("user\titem\n0\t0\n").is_err());
        assert!(parse_inter("").is_err());
        assert!(parse_inter("userID\titemID\tx_label\n0\t0\n").is_err());
    }

    #[test]
    fn per_user_time_split() {
        // user a: 4 distinct items (one repeated later), user b: 2 items (too few: all train)
        let ev = [
            ("a", "x", 30),
            ("a", "w", 10),
            ("b", "x", 5),
            ("a", "y", 20),
            ("a", "z", 40),
            ("a", "w", 50),
            ("b", "v", 6),
        ];
        let (d, maps) = Interactions::from_timed(&ev, 1, 1);
        let name = |(u, i): (u32, u32)| (maps.users[u as usize].clone(), maps.items[i as usize].clone());
        let s = |v: &[(u32, u32)]| v.iter().map(|&p| name(p)).collect::<Vec<_>>();
        let p = |u: &str, i: &str| (u.to_string(), i.to_string());
        assert_eq!(s(&d.test), vec![p("a", "z")]);
        assert_eq!(s(&d.valid), vec![p("a", "x")]);
        let mut tr = s(&d.train);
        tr.sort();
        assert_eq!(tr, vec![p("a", "w"), p("a", "y"), p("b", "v"), p("b", "x")]);
        assert_eq!((d.n_users, d.n_items), (2, 5));
        d.validate().unwrap();
    }

    #[test]
    fn user_items_sorted_dedup() {
        let ui = UserItems::from_pairs(3, &[(1, 5), (1, 2), (1, 5), (0, 9), (7, 1)]);
        assert_eq!(ui.get(0), &[9]);
        assert_eq!(ui.get(1), &[2, 5]);
        assert_eq!(ui.get(2), &[] as &[u32]);
        assert_eq!(ui.get(99), &[] as &[u32]);
        assert!(ui.contains(1, 2) && !ui.contains(1, 3));
        assert_eq!(ui.nnz(), 3);
    }
}
