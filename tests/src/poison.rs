//! JPEGs that fail in libjpeg-turbo's header or table parsing, made from a good baseline
//! JPEG by changing a byte or two of one segment. After such an error a TurboJPEG handle
//! that is reused may fail every later file with the same error, so each file here is fed
//! before good ones to check that one bad file costs nothing else.

/// A JPEG segment: its marker and the offset of its length field.
struct Segment {
    marker: u8,
    at: usize,
}

/// The segments of `jpeg` before its first scan.
fn segments(jpeg: &[u8]) -> Vec<Segment> {
    let (mut out, mut at) = (Vec::new(), 2);
    while let Some(&[0xFF, marker, hi, lo]) = jpeg.get(at..at + 4) {
        out.push(Segment { marker, at: at + 2 });
        if marker == 0xDA {
            break;
        }
        at += 2 + u16::from_be_bytes([hi, lo]) as usize;
    }
    out
}

/// The offset of the first segment's length field with one of `markers`.
fn find(jpeg: &[u8], markers: &[u8]) -> usize {
    segments(jpeg)
        .iter()
        .find(|s| markers.contains(&s.marker))
        .unwrap_or_else(|| panic!("no segment {markers:02X?} in the JPEG"))
        .at
}

/// `jpeg` with `edit` applied to a copy.
fn edited(jpeg: &[u8], edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    edit(&mut out);
    out
}

/// The start of frame markers (SOF0..SOF15 but DHT, JPG and DAC).
const SOF: [u8; 13] = [
    0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF,
];

/// Poisoning variants of the good JPEG `good` (whose first DHT segment holds a DC table
/// first, as every libjpeg encoder writes it), each with a name that says what is wrong:
/// a DHT class/index byte out of range, counts that add up to more than 256 symbols,
/// counts that no prefix code can have, a DC symbol above 15, a 0x0 frame, a 0-wide frame.
pub fn poisoned_jpegs(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let dht = find(good, &[0xC4]);
    let sof = find(good, &SOF);
    // DHT: length (2), class/index (1), 16 counts, the symbols.
    let (class, counts, symbols) = (dht + 2, dht + 3, dht + 19);
    assert_eq!(good[class] >> 4, 0, "the first Huffman table should be a DC one");
    vec![
        ("bad-dht-index", edited(good, |j| j[class] = 0x27)),
        (
            "too-many-huffman-symbols",
            edited(good, |j| j[counts..counts + 16].fill(0xFF)),
        ),
        ("impossible-huffman-counts", edited(good, |j| j[counts] = 3)),
        ("bad-dc-symbol", edited(good, |j| j[symbols] = 0xFF)),
        // SOF: length (2), precision (1), height (2), width (2).
        ("zero-by-zero-frame", edited(good, |j| j[sof + 3..sof + 7].fill(0))),
        ("zero-wide-frame", edited(good, |j| j[sof + 5..sof + 7].fill(0))),
    ]
}
