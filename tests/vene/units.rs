//! Gather/scatter of units and the unit-location formats.

use serde_json::json;
use tch::{Kind, Tensor};
use vene_api::SiteLayout;
use vene_host::{
    locations::{Selection, UnitLocations, UnitLocs},
    units::{flatten_units, unflatten_units, unit_kind, Indexer, UnitKind},
};

use crate::common::max_abs_diff;

#[test]
fn scatter_of_gathered_units_is_identity() {
    tch::manual_seed(1);
    let x = Tensor::randn([2, 4, 5, 3], (Kind::Float, tch::Device::Cpu));
    let locations = UnitLocs::Two(vec![vec![0, 3], vec![2, 1]], vec![vec![4, 0], vec![1, 2]]);
    let indexer = Indexer::new(&unit_kind(SiteLayout::Heads, "h.pos").unwrap(), &locations, tch::Device::Cpu).unwrap();
    let gathered = indexer.gather(&x);
    assert_eq!(gathered.size(), [2, 2, 2, 3]);
    assert_eq!(max_abs_diff(&indexer.scatter(&x, &gathered), &x), 0.0);
    // Element (example 1, head 1, position 2) is the second head and second position selected for example 1.
    assert_eq!(gathered.double_value(&[1, 1, 1, 0]), x.double_value(&[1, 1, 2, 0]));
}

#[test]
fn scatter_changes_only_the_selected_units() {
    let x = Tensor::zeros([2, 5, 3], (Kind::Float, tch::Device::Cpu));
    let indexer =
        Indexer::new(&UnitKind::Axes(vec![1]), &UnitLocs::One(vec![vec![1], vec![4]]), tch::Device::Cpu).unwrap();
    let written = indexer.scatter(&x, &Tensor::ones([2, 1, 3], (Kind::Float, tch::Device::Cpu)));
    assert_eq!(written.sum(Kind::Float).double_value(&[]), 6.0);
    assert_eq!(written.double_value(&[0, 1, 2]), 1.0);
    assert_eq!(written.double_value(&[1, 4, 0]), 1.0);
    assert_eq!(written.double_value(&[1, 1, 0]), 0.0);
}

#[test]
fn flattening_round_trips_like_pyvene() {
    let x = Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, tch::Device::Cpu)).view([2, 3, 4, 5]);
    let flat = flatten_units(&x);
    assert_eq!(flat.size(), [2, 4, 15]);
    assert_eq!(max_abs_diff(&unflatten_units(&flat, &x.size()), &x), 0.0);
    let y = x.select(1, 0);
    assert_eq!(flatten_units(&y).size(), [2, 20]);
}

fn base_units(locations: &UnitLocations, index: usize, count: usize, batch: usize) -> Selection {
    locations.resolve("sources->base", false, index, count, 1, batch, "test").unwrap().unwrap()
}

#[test]
fn shorthands_expand_like_pyvene() {
    let int = UnitLocations::parse(Some(&json!({"sources->base": 3}))).unwrap();
    assert_eq!(base_units(&int, 1, 2, 2), Selection::Units(UnitLocs::One(vec![vec![3], vec![3]])));
    let pair = UnitLocations::parse(Some(&json!({"sources->base": [1, 4]}))).unwrap();
    assert_eq!(
        pair.resolve("sources->base", true, 0, 1, 1, 2, "t").unwrap().unwrap(),
        Selection::Units(UnitLocs::One(vec![vec![1], vec![1]]))
    );
    assert_eq!(base_units(&pair, 0, 1, 2), Selection::Units(UnitLocs::One(vec![vec![4], vec![4]])));
    let flat = UnitLocations::parse(Some(&json!({"sources->base": [0, 1, 2]}))).unwrap();
    assert_eq!(base_units(&flat, 0, 1, 1), Selection::Units(UnitLocs::One(vec![vec![0, 1, 2]])));
    let base_only = UnitLocations::parse(Some(&json!({"base": 2}))).unwrap();
    assert_eq!(base_only.resolve("sources->base", true, 0, 1, 1, 1, "t").unwrap(), None);
    let whole = UnitLocations::parse(None).unwrap();
    assert_eq!(base_units(&whole, 0, 1, 1), Selection::Whole);
    let full =
        UnitLocations::parse(Some(&json!({"sources->base": [[[[0], [1]], null], [[[2], [3]], [[4], [5]]]]}))).unwrap();
    assert_eq!(base_units(&full, 1, 2, 2), Selection::Units(UnitLocs::One(vec![vec![4], vec![5]])));
    assert_eq!(full.resolve("sources->base", true, 1, 2, 1, 2, "t").unwrap(), Some(Selection::Whole));
}

#[test]
fn ragged_locations_are_refused() {
    let ragged = UnitLocations::parse(Some(&json!({"sources->base": [null, [[[0, 1], [2]]]]}))).unwrap();
    let error = ragged.resolve("sources->base", false, 0, 1, 1, 2, "zero on block_output at layer 0").unwrap_err();
    assert!(error.to_string().contains("every example must select the same number of units"), "{error}");
}

#[test]
fn spatial_positions_of_feature_maps_gather_channels_per_position() {
    let x = Tensor::arange(2 * 3 * 2 * 2, (Kind::Float, tch::Device::Cpu)).view([2, 3, 2, 2]);
    let kind = unit_kind(SiteLayout::FeatureMap, "pos").unwrap();
    let indexer = Indexer::new(&kind, &UnitLocs::One(vec![vec![3], vec![0]]), tch::Device::Cpu).unwrap();
    let gathered = indexer.gather(&x);
    assert_eq!(gathered.size(), [2, 1, 3]);
    // Position 3 is row 1, column 1: the three channels of example 0 there.
    let expected = x.get(0).select(1, 1).select(1, 1);
    assert_eq!(max_abs_diff(&gathered.get(0).get(0), &expected), 0.0);
    assert_eq!(max_abs_diff(&indexer.scatter(&x, &gathered), &x), 0.0);
    let zeroed = indexer.scatter(&x, &gathered.zeros_like());
    assert_eq!(zeroed.double_value(&[0, 2, 1, 1]), 0.0);
    assert_eq!(zeroed.double_value(&[0, 2, 1, 0]), x.double_value(&[0, 2, 1, 0]));
    let channels = unit_kind(SiteLayout::FeatureMap, "channel").unwrap();
    assert_eq!(channels, UnitKind::Axes(vec![1]));
}

/// A batch of per-example unit lists: `examples` rows of `units` distinct indices below `extent`.
fn distinct_rows(
    examples: usize,
    units: usize,
    extent: usize,
) -> impl proptest::strategy::Strategy<Value = Vec<Vec<i64>>> {
    use proptest::prelude::*;
    prop::collection::vec(
        Just((0..extent as i64).collect::<Vec<_>>()).prop_shuffle().prop_map(move |all| all[..units].to_vec()),
        examples,
    )
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// `(batch, seq, dim)` sizes with per-example distinct positions.
    fn position_case() -> impl Strategy<Value = (Vec<i64>, Vec<Vec<i64>>)> {
        (1usize..4, 1usize..7, 1usize..5).prop_flat_map(|(batch, seq, dim)| {
            (1..=seq).prop_flat_map(move |units| {
                distinct_rows(batch, units, seq)
                    .prop_map(move |rows| (vec![batch as i64, seq as i64, dim as i64], rows))
            })
        })
    }

    /// `(batch, heads, seq, dim)` sizes with per-example distinct heads and positions.
    fn head_case() -> impl Strategy<Value = (Vec<i64>, Vec<Vec<i64>>, Vec<Vec<i64>>)> {
        (1usize..3, 1usize..4, 1usize..5, 1usize..4).prop_flat_map(|(batch, heads, seq, dim)| {
            (1..=heads, 1..=seq).prop_flat_map(move |(head_units, position_units)| {
                (distinct_rows(batch, head_units, heads), distinct_rows(batch, position_units, seq)).prop_map(
                    move |(head_rows, position_rows)| {
                        (vec![batch as i64, heads as i64, seq as i64, dim as i64], head_rows, position_rows)
                    },
                )
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// scatter(x, gather(x)) = x; gather(scatter(x, v)) = v; units outside the selection keep their values.
        #[test]
        fn position_units_round_trip((size, rows) in position_case(), seed in 0i64..1000) {
            tch::manual_seed(seed);
            let x = Tensor::randn(size.as_slice(), (Kind::Float, tch::Device::Cpu));
            let indexer = Indexer::new(&UnitKind::Axes(vec![1]), &UnitLocs::One(rows.clone()), tch::Device::Cpu).unwrap();
            let gathered = indexer.gather(&x);
            prop_assert_eq!(max_abs_diff(&indexer.scatter(&x, &gathered), &x), 0.0);
            let values = Tensor::randn(gathered.size().as_slice(), (Kind::Float, tch::Device::Cpu));
            let written = indexer.scatter(&x, &values);
            prop_assert_eq!(max_abs_diff(&indexer.gather(&written), &values), 0.0);
            for (example, positions) in rows.iter().enumerate() {
                for position in 0..size[1] {
                    if !positions.contains(&position) {
                        let (before, after) = (x.get(example as i64).get(position), written.get(example as i64).get(position));
                        prop_assert_eq!(max_abs_diff(&before, &after), 0.0);
                    }
                }
            }
        }

        /// The same for two-level head × position units.
        #[test]
        fn head_units_round_trip((size, heads, positions) in head_case(), seed in 0i64..1000) {
            tch::manual_seed(seed);
            let x = Tensor::randn(size.as_slice(), (Kind::Float, tch::Device::Cpu));
            let kind = unit_kind(SiteLayout::Heads, "h.pos").unwrap();
            let indexer = Indexer::new(&kind, &UnitLocs::Two(heads.clone(), positions.clone()), tch::Device::Cpu).unwrap();
            let gathered = indexer.gather(&x);
            prop_assert_eq!(
                gathered.size(),
                vec![size[0], heads[0].len() as i64, positions[0].len() as i64, size[3]]
            );
            prop_assert_eq!(max_abs_diff(&indexer.scatter(&x, &gathered), &x), 0.0);
            let values = Tensor::randn(gathered.size().as_slice(), (Kind::Float, tch::Device::Cpu));
            prop_assert_eq!(max_abs_diff(&indexer.gather(&indexer.scatter(&x, &values)), &values), 0.0);
        }

        /// Explicit per-example locations, written as JSON in each of pyvene's forms, parse back to the same lists.
        #[test]
        fn explicit_locations_parse_back((_, rows) in position_case(), interventions in 1usize..4) {
            let batch = rows.len();
            let per_intervention = vec![rows.clone(); interventions];
            let forms = [
                json!({"base": per_intervention}),
                json!({"sources->base": [per_intervention, per_intervention]}),
            ];
            for form in &forms {
                let parsed = UnitLocations::parse(Some(form)).unwrap();
                for index in 0..interventions {
                    let selection =
                        parsed.resolve("sources->base", false, index, interventions, 1, batch, "property").unwrap();
                    prop_assert_eq!(selection, Some(Selection::Units(UnitLocs::One(rows.clone()))));
                }
            }
        }
    }
}
