//! Which byte ranges of which packs a restore reads: the blobs a batch of
//! files needs, grouped by pack and sorted by offset, neighbouring ones
//! read with one request (one ranged GET on S3), and a blob that several
//! files share read once. No I/O here, so the rules are tested on their
//! own.

use crate::repo::id::{ObjectId, PackId};
use crate::repo::index::Location;

/// How far neighbouring blobs are joined into one read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The largest gap between two blobs that is read and skipped rather
    /// than starting a second request.
    pub(crate) gap: u64,
    /// The most bytes one request spans (a single larger blob still gets
    /// a request of its own).
    pub(crate) span: u64,
}

/// One blob to read, and the targets (files, by the caller's numbers)
/// its plaintext goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) id: ObjectId,
    pub(crate) loc: Location,
    pub(crate) targets: Vec<usize>,
}

/// Blobs of one pack read with one request, in offset order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) pack: PackId,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) pieces: Vec<Piece>,
}

impl Run {
    fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// Whether `next` joins this run: same pack, after its end, over a gap
    /// of at most `limits.gap`, and the run stays within `limits.span`.
    fn takes(&self, next: &Location, limits: &Limits) -> bool {
        next.pack == self.pack
            && next.offset >= self.end()
            && next.offset - self.end() <= limits.gap
            && next.offset + next.length - self.offset <= limits.span
    }

    fn start(piece: Piece) -> Run {
        Run {
            pack: piece.loc.pack,
            offset: piece.loc.offset,
            len: piece.loc.length,
            pieces: vec![piece],
        }
    }

    fn push(&mut self, piece: Piece) {
        self.len = piece.loc.offset + piece.loc.length - self.offset;
        self.pieces.push(piece);
    }
}

/// Plans the reads of blobs each wanted by one target (`(target, id,
/// location)`, in any order): one piece per distinct blob, the runs of
/// each pack in offset order, and the runs ordered by the first target
/// they serve, so the earliest files are filled first.
pub(crate) fn group(wants: Vec<(usize, ObjectId, Location)>, limits: &Limits) -> Vec<Run> {
    let mut wants = wants;
    wants.sort_by_key(|&(target, id, loc)| (loc.pack, loc.offset, id, target));
    let mut pieces: Vec<Piece> = Vec::with_capacity(wants.len());
    for (target, id, loc) in wants {
        match pieces.last_mut() {
            Some(last) if last.id == id && last.loc == loc => last.targets.push(target),
            _ => pieces.push(Piece {
                id,
                loc,
                targets: vec![target],
            }),
        }
    }
    let mut runs = in_order(pieces, limits);
    runs.sort_by_key(|r| r.pieces.iter().flat_map(|p| &p.targets).min().copied());
    runs
}

/// Joins pieces that must be read in the order given (the blobs of one
/// large file): each run takes the following pieces while they lie after
/// it in the same pack.
pub(crate) fn in_order(pieces: Vec<Piece>, limits: &Limits) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for piece in pieces {
        match runs.last_mut() {
            Some(run) if run.takes(&piece.loc, limits) => run.push(piece),
            _ => runs.push(Run::start(piece)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        gap: 100,
        span: 1000,
    };

    fn pack(n: u8) -> PackId {
        PackId::from_bytes([n; 32])
    }

    fn blob(n: u8) -> ObjectId {
        ObjectId::from_bytes([n; 32])
    }

    fn at(p: u8, offset: u64, length: u64) -> Location {
        Location {
            pack: pack(p),
            offset,
            length,
            size: length,
        }
    }

    /// A run as (pack, offset, len, [(blob, targets)]), by first bytes.
    type Shape = (u8, u64, u64, Vec<(u8, Vec<usize>)>);

    fn shape(runs: &[Run]) -> Vec<Shape> {
        runs.iter()
            .map(|r| {
                let pieces = r
                    .pieces
                    .iter()
                    .map(|p| (p.id.as_bytes()[0], p.targets.clone()))
                    .collect();
                (r.pack.as_bytes()[0], r.offset, r.len, pieces)
            })
            .collect()
    }

    #[test]
    fn blobs_are_grouped_by_pack_and_neighbours_read_together() {
        // Files 0..6 in record order, their blobs spread over two packs.
        let wants = vec![
            (0, blob(1), at(1, 200, 50)),
            (1, blob(2), at(2, 0, 10)),
            (2, blob(3), at(1, 0, 100)),
            (3, blob(4), at(1, 100, 100)),
            (4, blob(5), at(2, 10, 10)),
            (5, blob(6), at(1, 250, 10)),
        ];
        let runs = group(wants, &LIMITS);
        assert_eq!(
            shape(&runs),
            vec![
                (
                    1,
                    0,
                    260,
                    vec![(3, vec![2]), (4, vec![3]), (1, vec![0]), (6, vec![5])]
                ),
                (2, 0, 20, vec![(2, vec![1]), (5, vec![4])]),
            ],
            "one request per pack, in offset order, the run of file 0 first"
        );
    }

    #[test]
    fn a_blob_several_files_share_is_read_once() {
        let wants = vec![
            (0, blob(1), at(1, 0, 10)),
            (1, blob(2), at(1, 10, 10)),
            (2, blob(1), at(1, 0, 10)),
        ];
        assert_eq!(
            shape(&group(wants, &LIMITS)),
            vec![(1, 0, 20, vec![(1, vec![0, 2]), (2, vec![1])])]
        );
    }

    #[test]
    fn gaps_and_spans_split_runs() {
        let wants = vec![
            (0, blob(1), at(1, 0, 10)),
            // A gap of 100: read and skipped.
            (1, blob(2), at(1, 110, 10)),
            // A gap of 101: a new request.
            (2, blob(3), at(1, 221, 10)),
            // Would make the run 1001 bytes long.
            (3, blob(4), at(1, 231, 991)),
            // Larger than a span on its own: a request of its own.
            (4, blob(5), at(1, 5000, 2000)),
        ];
        let runs = group(wants, &LIMITS);
        let spans: Vec<(u64, u64)> = runs.iter().map(|r| (r.offset, r.len)).collect();
        assert_eq!(spans, vec![(0, 120), (221, 10), (231, 991), (5000, 2000)]);
    }

    #[test]
    fn blobs_read_in_order_join_only_going_forward() {
        let piece = |n: u8, loc: Location| Piece {
            id: blob(n),
            loc,
            targets: vec![0],
        };
        // The chunks of one file: two neighbours, one earlier in the pack,
        // one in another pack, then back.
        let pieces = vec![
            piece(1, at(1, 100, 50)),
            piece(2, at(1, 150, 50)),
            piece(3, at(1, 0, 50)),
            piece(4, at(2, 0, 50)),
            piece(5, at(1, 200, 50)),
        ];
        let runs = in_order(pieces, &LIMITS);
        let spans: Vec<(u8, u64, u64)> = runs
            .iter()
            .map(|r| (r.pack.as_bytes()[0], r.offset, r.len))
            .collect();
        assert_eq!(
            spans,
            vec![(1, 100, 100), (1, 0, 50), (2, 0, 50), (1, 200, 50)]
        );
    }
}
