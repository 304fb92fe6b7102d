//! A table of invalid frames, each rejected with the expected error variant,
//! plus the edge cases that must still be accepted.

use throng_codec::*;

/// `name | version | error | frame`. Errors: M malformed, P protocol error,
/// T topic name invalid, U unsupported protocol version. Frame tokens are hex
/// bytes, `'text'` for ASCII, and `LL` for the one-byte remaining length.
const CASES: &str = r"
type 0                     | 5     | M | 00 00
auth in 3.1.1              | 3.1.1 | M | f0 00
5-byte remaining length    | 5     | M | 30 ff ff ff ff 01
frame longer than length   | 5     | M | c0 00 00
pingreq body               | 3.1.1 | M | c0 LL 00
pingresp body              | 5     | M | d0 LL 00
pingreq flags              | 3.1.1 | M | c1 00
3.1.1 disconnect body      | 3.1.1 | M | e0 LL 00
publish qos 3              | 3.1.1 | M | 36 LL 00 01 'a' 00 01
dup on qos 0               | 3.1.1 | M | 38 LL 00 01 'a'
dup on qos 0               | 5     | P | 38 LL 00 01 'a' 00
publish id 0               | 3.1   | M | 32 LL 00 01 'a' 00 00
publish id 0               | 5     | P | 32 LL 00 01 'a' 00 00 00
publish topic +            | 3.1.1 | T | 30 LL 00 03 'a/+'
publish topic #            | 5     | T | 30 LL 00 01 '#' 00
empty topic                | 3.1.1 | T | 30 LL 00 00
empty topic without alias  | 5     | P | 30 LL 00 00 00
invalid utf-8              | 3.1.1 | M | 30 LL 00 02 c3 28
utf-16 surrogate           | 3.1.1 | M | 30 LL 00 03 ed a0 80
U+0000 in topic            | 3.1.1 | M | 30 LL 00 03 'a' 00 'b'
topic past end             | 3.1.1 | M | 30 LL 00 05 'ab'
topic alias 0              | 5     | P | 30 LL 00 01 'a' 03 23 00 00
duplicate topic alias      | 5     | P | 30 LL 00 01 'a' 06 23 00 01 23 00 02
subscription id 0          | 5     | P | 30 LL 00 01 'a' 02 0b 00
payload format 2           | 5     | P | 30 LL 00 01 'a' 02 01 02
unknown property           | 5     | M | 30 LL 00 01 'a' 02 7f 00
property not in publish    | 5     | M | 30 LL 00 01 'a' 05 11 00 00 00 01
property length past end   | 5     | M | 30 LL 00 01 'a' 09 01 01
property value past end    | 5     | M | 30 LL 00 01 'a' 02 02 00
5-byte property length     | 5     | M | 30 LL 00 01 'a' 80 80 80 80 00
response topic wildcard    | 5     | P | 30 LL 00 01 'a' 04 08 00 01 '#'
puback flags               | 3.1.1 | M | 42 LL 00 01
pubrel flags               | 3.1.1 | M | 60 LL 00 01
pubrel dup                 | 3.1.1 | M | 6a LL 00 01
puback id 0                | 3.1.1 | M | 40 LL 00 00
pubcomp id 0               | 5     | P | 70 LL 00 00
puback trailing byte       | 3.1.1 | M | 40 LL 00 01 00
puback too short           | 3.1.1 | M | 40 LL 00
puback reason 0x05         | 5     | P | 40 LL 00 01 05
pubrel puback reason       | 5     | P | 62 LL 00 01 10
puback user + subid        | 5     | M | 40 LL 00 01 00 02 0b 01
puback trailing after props| 5     | M | 40 LL 00 01 00 00 00
disconnect reason 0x05     | 5     | P | e0 LL 05
disconnect topic alias     | 5     | M | e0 LL 00 03 23 00 01
auth reason 0x01           | 5     | P | f0 LL 01 00
subscribe flags            | 3.1.1 | M | 80 LL 00 01 00 01 'a' 00
subscribe no filters       | 3.1.1 | P | 82 LL 00 01
subscribe no filters       | 5     | P | 82 LL 00 01 00
subscribe missing options  | 3.1.1 | M | 82 LL 00 01 00 01 'a'
3.1.1 option bits          | 3.1.1 | M | 82 LL 00 01 00 01 'a' 04
subscription qos 3         | 5     | M | 82 LL 00 01 00 00 01 'a' 03
options reserved bits      | 5     | M | 82 LL 00 01 00 00 01 'a' 40
retain handling 3          | 5     | M | 82 LL 00 01 00 00 01 'a' 30
no local on shared         | 5     | P | 82 LL 00 01 00 00 0a '$share/g/a' 04
two subscription ids       | 5     | P | 82 LL 00 01 04 0b 01 0b 02 00 01 'a' 00
subscribe id 0             | 3.1.1 | M | 82 LL 00 00 00 01 'a' 00
unsubscribe no filters     | 3.1.1 | P | a2 LL 00 01
unsubscribe flags          | 3.1.1 | M | a0 LL 00 01 00 01 'a'
unsubscribe bad property   | 5     | M | a2 LL 00 01 02 1f 00 00 01 'a'
suback no codes            | 3.1.1 | P | 90 LL 00 01
suback code 3              | 3.1.1 | P | 90 LL 00 01 03
suback 5.0-only code       | 3.1.1 | P | 90 LL 00 01 87
unsuback body in 3.1.1     | 3.1.1 | M | b0 LL 00 01 00
unsuback no codes          | 5     | P | b0 LL 00 01 00
connack reserved flags     | 3.1.1 | M | 20 LL 02 00
connack code 6             | 3.1.1 | P | 20 LL 00 06
connack session on failure | 3.1.1 | M | 20 LL 01 05
connack session on failure | 5     | P | 20 LL 01 80 00
connack without properties | 5     | M | 20 LL 00 00
maximum qos 2              | 5     | P | 20 LL 00 00 02 24 02
retain available 2         | 5     | P | 20 LL 00 00 02 25 02
connect header flags       | 3.1.1 | M | 11 LL 00 04 'MQTT' 04 02 00 00 00 00
invalid protocol name      | 3.1.1 | M | 10 LL 00 04 'MQTX' 04 02 00 00 00 00
protocol name past end     | 3.1.1 | M | 10 LL 00 04 'MQ'
reserved connect flag      | 3.1.1 | M | 10 LL 00 04 'MQTT' 04 03 00 00 00 00
will qos without will      | 3.1.1 | M | 10 LL 00 04 'MQTT' 04 08 00 00 00 00
will retain without will   | 3.1.1 | M | 10 LL 00 04 'MQTT' 04 20 00 00 00 00
will qos 3                 | 3.1.1 | M | 10 LL 00 04 'MQTT' 04 1c 00 00 00 00 00 01 'w' 00 00
password without user      | 3.1.1 | M | 10 LL 00 04 'MQTT' 04 40 00 00 00 00 00 01 'p'
password without user      | 3.1   | M | 10 LL 00 06 'MQIsdp' 03 40 00 00 00 00 00 01 'p'
will topic wildcard        | 3.1.1 | T | 10 LL 00 04 'MQTT' 04 04 00 00 00 00 00 01 '#' 00 00
empty will topic           | 3.1.1 | T | 10 LL 00 04 'MQTT' 04 04 00 00 00 00 00 00 00 00
connect trailing byte      | 3.1.1 | M | 10 LL 00 04 'MQTT' 04 02 00 00 00 00 00
user name flag, no name    | 3.1.1 | M | 10 LL 00 04 'MQTT' 04 80 00 00 00 00
client id not utf-8        | 3.1.1 | M | 10 LL 00 04 'MQTT' 04 02 00 00 00 01 ff
receive maximum 0          | 5     | P | 10 LL 00 04 'MQTT' 05 02 00 00 03 21 00 00 00 00
maximum packet size 0      | 5     | P | 10 LL 00 04 'MQTT' 05 02 00 00 05 27 00 00 00 00 00 00
request problem info 2     | 5     | P | 10 LL 00 04 'MQTT' 05 02 00 00 02 17 02 00 00
request response info 2    | 5     | P | 10 LL 00 04 'MQTT' 05 02 00 00 02 19 02 00 00
duplicate session expiry   | 5     | P | 10 LL 00 04 'MQTT' 05 02 00 00 0a 11 00 00 00 01 11 00 00 00 02 00 00
topic alias in connect     | 5     | M | 10 LL 00 04 'MQTT' 05 02 00 00 03 23 00 01 00 00
auth data without method   | 5     | P | 10 LL 00 04 'MQTT' 05 02 00 00 04 16 00 01 'x' 00 00
properties past end        | 5     | M | 10 LL 00 04 'MQTT' 05 02 00 00 10 00 00
topic alias in will        | 5     | M | 10 LL 00 04 'MQTT' 05 06 00 00 00 00 00 03 23 00 01 00 01 'w' 00 00
will delay in publish      | 5     | M | 30 LL 00 01 'a' 05 18 00 00 00 01
unknown level              | 5     | U | 10 LL 00 04 'MQTT' 06 02 00 00 00 00
unknown level              | 3.1.1 | U | 10 LL 00 04 'MQTT' 03 02 00 00 00 00
unknown level              | 3.1.1 | U | 10 LL 00 06 'MQIsdp' 04 02 00 00 00 00
bridge level bit           | 3.1.1 | U | 10 LL 00 04 'MQTT' 84 02 00 00 00 00
";

/// Edge cases that must decode.
const ACCEPTED: &str = r"
5.0 password without user  | 5     | - | 10 LL 00 04 'MQTT' 05 42 00 00 00 00 00 00 01 'p'
repeated subscription ids  | 5     | - | 30 LL 00 01 'a' 04 0b 01 0b 02
repeated user properties   | 5     | - | 30 LL 00 01 'a' 0b 26 00 01 'k' 00 00 26 00 00 00 00
empty topic with alias     | 5     | - | 30 LL 00 00 03 23 00 01
non-minimal length         | 3.1.1 | - | c0 80 00
non-minimal property id    | 5     | - | 30 LL 00 01 'a' 03 81 00 01
disconnect reason only     | 5     | - | e0 LL 04
auth reason only           | 5     | - | f0 LL 18
pubrel dup in 3.1          | 3.1   | - | 6a LL 00 01
subscribe dup in 3.1       | 3.1   | - | 8a LL 00 01 00 01 'a' 00
empty client id            | 3.1.1 | - | 10 LL 00 04 'MQTT' 04 02 00 00 00 00
empty payload, qos 2       | 3.1.1 | - | 34 LL 00 01 'a' 00 01
";

struct Case {
    name: String,
    version: ProtocolVersion,
    kind: String,
    frame: Vec<u8>,
}

fn parse(table: &str) -> Vec<Case> {
    table
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('|').map(str::trim).collect();
            let version = match cols[1] {
                "3.1" => ProtocolVersion::V3_1,
                "3.1.1" => ProtocolVersion::V3_1_1,
                "5" => ProtocolVersion::V5,
                v => panic!("bad version {v}"),
            };
            let mut frame = Vec::new();
            let mut len_at = None;
            for token in cols[3].split_whitespace() {
                if token == "LL" {
                    len_at = Some(frame.len());
                    frame.push(0);
                } else if let Some(text) = token.strip_prefix('\'') {
                    frame.extend_from_slice(text.trim_end_matches('\'').as_bytes());
                } else {
                    frame.push(u8::from_str_radix(token, 16).expect(token));
                }
            }
            if let Some(at) = len_at {
                let len = frame.len() - at - 1;
                assert!(len < 128, "{line}");
                frame[at] = len as u8;
            }
            Case {
                name: cols[0].to_owned(),
                version,
                kind: cols[2].to_owned(),
                frame,
            }
        })
        .collect()
}

/// Frames the bytes as a server would (`check` first) and decodes them.
fn read(case: &Case) -> Result<Packet, DecodeError> {
    match check(&case.frame, usize::MAX)? {
        Some(len) if len == case.frame.len() => decode(&case.frame, case.version),
        other => panic!("{}: framed as {other:?}", case.name),
    }
}

#[test]
fn invalid_frames_are_rejected() {
    for case in parse(CASES) {
        // "frame longer than length" is only detectable by decode.
        let err = if case.name == "frame longer than length" {
            decode(&case.frame, case.version).unwrap_err()
        } else if case.name == "5-byte remaining length" || case.name == "type 0" {
            check(&case.frame, usize::MAX).unwrap_err()
        } else {
            read(&case)
                .err()
                .unwrap_or_else(|| panic!("{}: accepted {:02x?}", case.name, case.frame))
        };
        let ok = match case.kind.as_str() {
            "M" => matches!(err, DecodeError::MalformedPacket(_)),
            "P" => matches!(err, DecodeError::ProtocolError(_)),
            "T" => err == DecodeError::TopicNameInvalid,
            "U" => {
                err == DecodeError::UnsupportedProtocolVersion(
                    case.frame[4 + usize::from(case.frame[3])],
                )
            }
            k => panic!("bad kind {k}"),
        };
        assert!(ok, "{} ({:?}): got {err:?}", case.name, case.version);
        fuzz_one(&case.frame);
    }
}

#[test]
fn edge_cases_are_accepted() {
    for case in parse(ACCEPTED) {
        if let Err(e) = read(&case) {
            panic!("{} ({:?}): {e:?}", case.name, case.version);
        }
        fuzz_one(&case.frame);
    }
}

#[test]
fn oversized_frames_are_rejected_before_the_body() {
    // A 200-byte PUBLISH announced by its first three bytes.
    assert_eq!(
        check(&[0x30, 0xC5, 0x01], 100),
        Err(DecodeError::PacketTooLarge {
            size: 200,
            max: 100
        })
    );
    assert_eq!(check(&[0x30, 0xC5], 100), Ok(None));
}

#[test]
fn reason_codes() {
    assert_eq!(DecodeError::MalformedPacket("x").reason_code(), 0x81);
    assert_eq!(DecodeError::ProtocolError("x").reason_code(), 0x82);
    let too_large = DecodeError::PacketTooLarge { size: 2, max: 1 };
    assert_eq!(too_large.reason_code(), 0x95);
    assert_eq!(
        DecodeError::UnsupportedProtocolVersion(6).reason_code(),
        0x84
    );
    assert_eq!(DecodeError::TopicNameInvalid.reason_code(), 0x90);
}
