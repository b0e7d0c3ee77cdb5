//! Reading the live view's wire format (written by `server::recent`): a header line
//! `wxmp-tail epoch=E last=L skipped=S`, then one `SEQ TEXT` line per push.

/// One answer from `GET /tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Names the server's run; a new value means the numbering started again.
    pub epoch: u64,
    /// The newest number the server holds.
    pub last: u64,
    /// Lines the reader missed (dropped from the server's buffer before it asked).
    pub skipped: u64,
    pub lines: Vec<(u64, String)>,
}

/// Reads a page; the error says what was wrong with it.
pub fn parse_page(text: &str) -> Result<Page, String> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let mut words = header.split(' ');
    if words.next() != Some("wxmp-tail") {
        return Err("no wxmp-tail header".into());
    }
    let mut field = |name: &str| -> Result<u64, String> {
        words
            .next()
            .and_then(|w| w.strip_prefix(name))
            .and_then(|w| w.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("the header lacks {name}"))
    };
    let epoch = field("epoch")?;
    let last = field("last")?;
    let skipped = field("skipped")?;
    let lines = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (seq, text) = l.split_once(' ').unwrap_or((l, ""));
            seq.parse()
                .map(|seq| (seq, text.to_owned()))
                .map_err(|_| format!("a line without its number: {l:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page {
        epoch,
        last,
        skipped,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_read_back() {
        let p = parse_page("wxmp-tail epoch=9 last=3 skipped=1\n2 a b\n3 c\n").unwrap();
        assert_eq!(
            p,
            Page {
                epoch: 9,
                last: 3,
                skipped: 1,
                lines: vec![(2, "a b".into()), (3, "c".into())]
            }
        );
        assert!(parse_page("not found\n").is_err());
        assert!(parse_page("wxmp-tail epoch=9 last=x skipped=0\n").is_err());
        assert!(parse_page("wxmp-tail epoch=9 last=1 skipped=0\nx y\n").is_err());
    }
}
