//! Fuzz entry points: feed arbitrary bytes to every parser that reads bytes from outside.
//! They must never panic, whatever the input; errors are fine.

use bytes::{Bytes, BytesMut};

use crate::client::{BackupMachine, ServerCompression};
use crate::codec::{BackendMessage, StreamMessage};
use crate::lsn::TimelineId;
use crate::lz4::Lz4FrameDecoder;
use crate::stream::WalStreamMachine;
use crate::tar::TarParser;

/// Parses `data` as a sequence of backend messages, drives the BASE_BACKUP (plain and lz4)
/// and WAL streaming state machines with whatever messages parsed, then decodes it as an
/// lz4 frame, parses it as a tar stream and decodes it as a WAL segment. Returns the number of events
/// produced (so the optimizer cannot drop the work). Never panics.
pub fn fuzz_input(data: &[u8]) -> usize {
    let mut events = 0;
    // The BASE_BACKUP machine, with plain and with lz4-compressed archives.
    for compression in [ServerCompression::None, ServerCompression::Lz4] {
        let mut buf = BytesMut::from(data);
        let mut machine = BackupMachine::new(compression);
        let mut machine_ok = true;
        while let Ok(Some(msg)) = BackendMessage::parse(&mut buf) {
            events += 1;
            if machine_ok {
                machine_ok = machine.feed(msg).is_ok();
                while machine_ok {
                    match machine.poll_event() {
                        Ok(Some(_)) => events += 1,
                        Ok(None) => break,
                        Err(_) => machine_ok = false,
                    }
                }
            }
        }
    }
    // The lz4 frame decoder on its own, fed in two pieces.
    let mut lz4 = Lz4FrameDecoder::new();
    for piece in [&data[..data.len() / 2], &data[data.len() / 2..]] {
        lz4.push(piece);
        while let Ok(Some(_)) = lz4.next_block() {
            events += 1;
        }
    }
    // The WAL streaming state machine, and the replication CopyData parser.
    let mut buf = BytesMut::from(data);
    let mut wal = WalStreamMachine::new(TimelineId(1));
    let mut out = BytesMut::new();
    while let Ok(Some(msg)) = BackendMessage::parse(&mut buf) {
        if let BackendMessage::CopyData(d) = &msg {
            if StreamMessage::parse_copy_data(d.clone()).is_ok() {
                events += 1;
            }
        }
        match wal.feed(msg, &mut out) {
            Ok(Some(_)) => events += 1,
            Ok(None) => {}
            Err(_) => break,
        }
    }
    let mut tar = TarParser::new();
    let mut input = Bytes::copy_from_slice(data);
    while let Ok(Some(_)) = tar.next_event(&mut input) {
        events += 1;
    }
    // The WAL segment decoder.
    events += hs_pg::fuzz_decode(data);
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            fuzz_input(&data);
        }

        #[test]
        fn plausible_messages_never_panic(
            msgs in proptest::collection::vec(
                (prop::sample::select(b"RSKZTDCEHdcNnvW".to_vec()), proptest::collection::vec(any::<u8>(), 0..600)),
                0..30,
            )
        ) {
            let mut b = Vec::new();
            for (tag, body) in msgs {
                b.push(tag);
                b.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
                b.extend_from_slice(&body);
            }
            fuzz_input(&b);
        }
    }
}
