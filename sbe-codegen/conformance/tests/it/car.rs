//! The reference "Car" message: decode the 207 bytes the reference Java encoder wrote, encode
//! them back byte for byte, and read the same bytes with the version-1 extension decoder.

use sbe_conformance::{baseline, extension};
use sbe_runtime::DecodeError;

use super::shared_vector;

/// The values the reference README lists, checked on a baseline decoder.
fn check_car(car: &baseline::CarDecoder<'_>, some_numbers: [u32; 4]) {
    use baseline::*;
    assert_eq!(car.header().block_length, 45);
    assert_eq!(car.header().template_id, 1);
    assert_eq!(car.header().schema_id, 1);
    assert_eq!(car.header().version, 0);
    assert_eq!(car.serial_number(), 1234);
    assert_eq!(car.model_year(), 2013);
    assert_eq!(car.available(), Some(BooleanType::T));
    assert_eq!(car.code(), Some(Model::A));
    assert_eq!(car.some_numbers(), some_numbers);
    assert_eq!(car.vehicle_code(), b"abcdef");
    let extras = car.extras();
    assert_eq!(extras.raw(), 6);
    assert!(extras.sports_pack() && extras.cruise_control() && !extras.sun_roof());
    assert_eq!(car.discounted_model(), Model::C);
    let engine = car.engine();
    assert_eq!(engine.capacity(), 2000);
    assert_eq!(engine.num_cylinders(), 4);
    assert_eq!(engine.max_rpm(), 9000);
    assert_eq!(engine.manufacturer_code(), b"123");
    assert_eq!(engine.fuel(), b"Petrol");
    assert_eq!(engine.efficiency(), 35);
    assert_eq!(engine.booster_enabled(), Some(BooleanType::T));
    assert_eq!(engine.booster().boost_type(), Some(BoostType::Nitrous));
    assert_eq!(engine.booster().horse_power(), 200);

    let fuel: Vec<(u16, f32, Vec<u8>)> = car
        .fuel_figures()
        .map(|f| (f.speed(), f.mpg(), f.usage_description().to_vec()))
        .collect();
    assert_eq!(
        fuel,
        vec![
            (30, 35.9, b"Urban Cycle".to_vec()),
            (55, 49.0, b"Combined Cycle".to_vec()),
            (75, 40.0, b"Highway Cycle".to_vec()),
        ]
    );
    let performance: Vec<(u8, Vec<(u16, f32)>)> = car
        .performance_figures()
        .map(|p| {
            let acceleration = p.acceleration().map(|a| (a.mph(), a.seconds())).collect();
            (p.octane_rating(), acceleration)
        })
        .collect();
    assert_eq!(
        performance,
        vec![
            (95, vec![(30, 4.0), (60, 7.5), (100, 12.2)]),
            (99, vec![(30, 3.8), (60, 7.1), (100, 11.8)]),
        ]
    );
    assert_eq!(car.manufacturer(), b"Honda");
    assert_eq!(car.model(), b"Civic VTi");
    assert_eq!(car.activation_code(), b"abcdef");
    assert_eq!(car.encoded_length(), 207);
}

#[test]
fn baseline_decoder_reads_the_reference_bytes() {
    let bytes = shared_vector("car_example_baseline_data.sbe");
    assert_eq!(bytes.len(), 207);
    let car = baseline::CarDecoder::decode(&bytes).expect("the reference frame decodes");
    check_car(&car, [1, 2, 3, 4]);
    let baseline::Message::Car(again) = baseline::decode(&bytes).expect("dispatch decodes it too");
    assert_eq!(again.serial_number(), 1234);
}

/// Encodes the README's values with the generated encoder.
fn encode_car(buf: &mut [u8], some_numbers: [u32; 4]) -> Result<usize, sbe_runtime::EncodeError> {
    use baseline::*;
    let mut car = CarEncoder::wrap(buf)?;
    car.serial_number(1234)
        .model_year(2013)
        .available(BooleanType::T)
        .code(Model::A)
        .some_numbers(&some_numbers)
        .vehicle_code(b"abcdef")
        .extras(
            OptionalExtras::default()
                .with_sports_pack(true)
                .with_cruise_control(true),
        );
    let mut engine = car.engine();
    engine
        .capacity(2000)
        .num_cylinders(4)
        .manufacturer_code(b"123")
        .efficiency(35)
        .booster_enabled(BooleanType::T);
    engine
        .booster()
        .boost_type(BoostType::Nitrous)
        .horse_power(200);
    let mut fuel = car.fuel_figures(3)?;
    for (speed, mpg, usage) in [
        (30, 35.9, "Urban Cycle"),
        (55, 49.0, "Combined Cycle"),
        (75, 40.0, "Highway Cycle"),
    ] {
        fuel.next_entry()?
            .speed(speed)
            .mpg(mpg)
            .usage_description(usage.as_bytes())?;
    }
    let mut performance = car.performance_figures(2)?;
    for (octane, figures) in [
        (95, [(30, 4.0), (60, 7.5), (100, 12.2)]),
        (99, [(30, 3.8), (60, 7.1), (100, 11.8)]),
    ] {
        performance.next_entry()?.octane_rating(octane);
        let mut acceleration = performance.acceleration(3)?;
        for (mph, seconds) in figures {
            acceleration.next_entry()?.mph(mph).seconds(seconds);
        }
    }
    car.manufacturer(b"Honda")?
        .model(b"Civic VTi")?
        .activation_code(b"abcdef")?;
    Ok(car.finish())
}

#[test]
fn baseline_encoder_recreates_the_reference_bytes() {
    let expected = shared_vector("car_example_baseline_data.sbe");
    let mut buf = [0xa5u8; 512];
    let len = encode_car(&mut buf, [1, 2, 3, 4]).expect("encodes");
    assert_eq!(len, 207);
    assert_eq!(&buf[..len], &expected[..]);
}

#[test]
fn encoder_refuses_a_short_buffer_and_an_extra_entry() {
    let mut small = [0u8; 100];
    match encode_car(&mut small, [1, 2, 3, 4]) {
        Err(sbe_runtime::EncodeError::BufferTooSmall { needed, got: 100 }) => assert!(needed > 100),
        other => panic!("expected BufferTooSmall, got {other:?}"),
    }
    let mut buf = [0u8; 256];
    let mut car = baseline::CarEncoder::wrap(&mut buf).expect("fits");
    let mut fuel = car.fuel_figures(1).expect("fits");
    assert!(fuel.next_entry().is_ok());
    assert_eq!(
        fuel.next_entry().err(),
        Some(sbe_runtime::EncodeError::GroupOverflow { id: 10, count: 1 })
    );
}

#[test]
fn extension_decoder_reads_a_version_0_message() {
    let bytes = shared_vector("car_example_extension_data.sbe");
    let car = extension::CarDecoder::decode(&bytes).expect("an older message decodes");
    assert_eq!(car.acting_version(), 0);
    assert_eq!(car.header().block_length, 45);
    assert_eq!(extension::CarDecoder::BLOCK_LENGTH, 62);
    assert_eq!(car.uuid(), None, "uuid is sinceVersion 1");
    assert_eq!(
        car.cup_holder_count(),
        None,
        "cupHolderCount is sinceVersion 1"
    );
    assert_eq!(car.serial_number(), 1234);
    assert_eq!(car.some_numbers(), [0, 1, 2, 3]);
    assert_eq!(car.engine().booster().horse_power(), 200);
    let speeds: Vec<u16> = car.fuel_figures().map(|f| f.speed()).collect();
    assert_eq!(speeds, [30, 55, 75]);
    let last = car.performance_figures().last().expect("two entries");
    assert_eq!(
        last.acceleration().map(|a| a.seconds()).collect::<Vec<_>>(),
        [3.8, 7.1, 11.8]
    );
    assert_eq!(car.manufacturer(), b"Honda");
    assert_eq!(car.model(), b"Civic VTi");
    assert_eq!(car.activation_code(), b"abcdef");

    // The baseline decoder reads the same bytes identically.
    let base = baseline::CarDecoder::decode(&bytes).expect("decodes");
    check_car(&base, [0, 1, 2, 3]);
}

#[test]
fn baseline_decoder_reads_a_version_1_message_from_the_extension_encoder() {
    let mut buf = [0u8; 256];
    let mut car = extension::CarEncoder::wrap(&mut buf).expect("fits");
    car.serial_number(99)
        .uuid(&[7, -7])
        .cup_holder_count(Some(3));
    car.fuel_figures(0).expect("fits");
    car.performance_figures(0).expect("fits");
    car.manufacturer(b"M")
        .expect("fits")
        .model(b"X")
        .expect("fits");
    car.activation_code(b"").expect("fits");
    let len = car.finish();
    let newer = &buf[..len];

    let new = extension::CarDecoder::decode(newer).expect("decodes");
    assert_eq!(new.uuid(), Some([7, -7]));
    assert_eq!(new.cup_holder_count(), Some(3));

    let old = baseline::CarDecoder::decode(newer).expect("a newer message decodes");
    assert_eq!(old.acting_version(), 1);
    assert_eq!(old.header().block_length, 62);
    assert_eq!(old.serial_number(), 99);
    assert_eq!(old.fuel_figures().len(), 0);
    assert_eq!(old.manufacturer(), b"M");
    assert_eq!(old.model(), b"X");
    assert_eq!(old.activation_code(), b"");
}

#[test]
fn truncated_reference_frames_are_rejected_at_every_length() {
    let bytes = shared_vector("car_example_baseline_data.sbe");
    for len in 0..bytes.len() {
        match baseline::decode(&bytes[..len]) {
            Err(DecodeError::Truncated { needed, got }) => {
                assert_eq!(got, len);
                assert!(needed > len, "needed {needed} at length {len}");
            }
            other => panic!("length {len}: expected a truncation error, got {other:?}"),
        }
    }
}

#[test]
fn wrong_schema_and_unknown_template_are_typed_errors() {
    let mut bytes = shared_vector("car_example_baseline_data.sbe");
    bytes[2] = 9;
    assert_eq!(
        baseline::decode(&bytes).err(),
        Some(DecodeError::UnknownTemplate(9))
    );
    assert_eq!(
        baseline::CarDecoder::decode(&bytes).err(),
        Some(DecodeError::WrongTemplate {
            expected: 1,
            got: 9
        })
    );
    bytes[2] = 1;
    bytes[4] = 2;
    assert_eq!(
        baseline::decode(&bytes).err(),
        Some(DecodeError::WrongSchema {
            expected: 1,
            got: 2
        })
    );
}

#[test]
fn a_root_block_shorter_than_version_0_is_rejected() {
    let mut bytes = shared_vector("car_example_baseline_data.sbe");
    bytes[0] = 44;
    assert_eq!(
        baseline::decode(&bytes).err(),
        Some(DecodeError::BlockTooShort {
            id: 1,
            needed: 45,
            got: 44
        })
    );
}

#[test]
fn group_count_over_the_cap_is_rejected() {
    let bytes = shared_vector("car_example_baseline_data.sbe");
    let limits = sbe_runtime::Limits { group_count_max: 2 };
    assert_eq!(
        baseline::decode_with(&bytes, &limits).err(),
        Some(DecodeError::GroupTooLarge {
            id: 10,
            count: 3,
            max: 2
        })
    );
}

#[test]
fn json_names_every_field_as_the_schema_does() {
    let bytes = shared_vector("car_example_baseline_data.sbe");
    let mut out = String::new();
    baseline::decode(&bytes)
        .expect("decodes")
        .write_json(&mut out);
    assert_eq!(
        out,
        concat!(
            r#"{"message":"Car","serialNumber":1234,"modelYear":2013,"available":"T","code":"A","#,
            r#""someNumbers":[1,2,3,4],"vehicleCode":"abcdef","extras":["sportsPack","cruiseControl"],"#,
            r#""discountedModel":"C","engine":{"capacity":2000,"numCylinders":4,"maxRpm":9000,"#,
            r#""manufacturerCode":"123","fuel":"Petrol","efficiency":35,"boosterEnabled":"T","#,
            r#""booster":{"BoostType":"NITROUS","horsePower":200}},"#,
            r#""fuelFigures":[{"speed":30,"mpg":35.9,"usageDescription":"Urban Cycle"},"#,
            r#"{"speed":55,"mpg":49,"usageDescription":"Combined Cycle"},"#,
            r#"{"speed":75,"mpg":40,"usageDescription":"Highway Cycle"}],"#,
            r#""performanceFigures":[{"octaneRating":95,"acceleration":[{"mph":30,"seconds":4},"#,
            r#"{"mph":60,"seconds":7.5},{"mph":100,"seconds":12.2}]},{"octaneRating":99,"#,
            r#""acceleration":[{"mph":30,"seconds":3.8},{"mph":60,"seconds":7.1},"#,
            r#"{"mph":100,"seconds":11.8}]}],"manufacturer":"Honda","model":"Civic VTi","#,
            r#""activationCode":"abcdef"}"#
        )
    );
}
