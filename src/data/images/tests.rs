//! Tests of dataset loading, transforms, splits and batches, on hand-made files with
//! known values and, when present, the digits and Fashion-MNIST fixtures.

use super::*;
use crate::data::Images;
use std::io::Write;

fn im(d: &Dataset) -> &Images {
    d.images().unwrap()
}

fn idx_bytes(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Two 2×3 images: 0,51,102,153,204,255 and all 255; labels 3 and 1.
fn tiny_idx(dir: &Path, gz: bool) -> (PathBuf, PathBuf) {
    let mut pixels = vec![0u8, 51, 102, 153, 204, 255];
    pixels.extend([255u8; 6]);
    let images = idx_bytes(2051, &[2, 2, 3], &pixels);
    let labels = idx_bytes(2049, &[2], &[3, 1]);
    if gz {
        (
            write(dir, "img.gz", &gzip(&images)),
            write(dir, "lbl.gz", &gzip(&labels)),
        )
    } else {
        (write(dir, "img", &images), write(dir, "lbl", &labels))
    }
}

fn assert_close(actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() < 1e-6, "{actual:?} vs {expected:?}");
    }
}

fn assert_error_names(err: DataError, path: &Path) {
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "{message:?} does not name {}",
        path.display()
    );
    assert!(!message.contains('\n'), "{message:?} is not one line");
}

#[test]
fn idx_raw_and_gzip_load_known_values() {
    let dir = tempfile::tempdir().unwrap();
    for gz in [false, true] {
        let (images, labels) = tiny_idx(dir.path(), gz);
        let data = Dataset::load_idx(&images, &labels).unwrap();
        assert_eq!(
            (
                data.n,
                im(&data).channels,
                im(&data).height,
                im(&data).width
            ),
            (2, 1, 2, 3)
        );
        assert_eq!(data.labels, vec![3, 1]);
        assert_eq!(data.num_classes, 4);
        let mut expected = vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
        expected.extend([1.0; 6]);
        assert_close(&im(&data).values, &expected);
    }
}

#[test]
fn idx_faults_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = tiny_idx(dir.path(), false);
    let full = std::fs::read(&images).unwrap();

    let truncated = write(dir.path(), "truncated", &full[..full.len() - 1]);
    assert_error_names(
        Dataset::load_idx(&truncated, &labels).unwrap_err(),
        &truncated,
    );

    let short_header = write(dir.path(), "short", &full[..6]);
    assert_error_names(
        Dataset::load_idx(&short_header, &labels).unwrap_err(),
        &short_header,
    );

    // Labels given where images belong: wrong magic.
    assert_error_names(Dataset::load_idx(&labels, &labels).unwrap_err(), &labels);

    let three_labels = write(dir.path(), "three", &idx_bytes(2049, &[3], &[0, 1, 2]));
    assert_error_names(
        Dataset::load_idx(&images, &three_labels).unwrap_err(),
        &three_labels,
    );

    let gz = gzip(&full);
    let cut_gzip = write(dir.path(), "cut.gz", &gz[..gz.len() / 2]);
    assert_error_names(
        Dataset::load_idx(&cut_gzip, &labels).unwrap_err(),
        &cut_gzip,
    );

    let missing = dir.path().join("missing");
    assert_error_names(Dataset::load_idx(&missing, &labels).unwrap_err(), &missing);
}

fn digits_row(first: u32, label: u32) -> String {
    let mut fields: Vec<String> = vec!["0".into(); 64];
    fields[0] = first.to_string();
    fields[63] = "16".into();
    fields.push(label.to_string());
    fields.join(",")
}

#[test]
fn digits_csv_raw_and_gzip_load_known_values() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{}\n{}\n", digits_row(4, 7), digits_row(8, 2));
    for path in [
        write(dir.path(), "d.csv", text.as_bytes()),
        write(dir.path(), "d.csv.gz", &gzip(text.as_bytes())),
    ] {
        let data = Dataset::load_digits_csv(&path).unwrap();
        assert_eq!(
            (
                data.n,
                im(&data).channels,
                im(&data).height,
                im(&data).width
            ),
            (2, 1, 8, 8)
        );
        assert_eq!(data.labels, vec![7, 2]);
        assert_eq!(data.num_classes, 8);
        assert_eq!(im(&data).values[0], 0.25);
        assert_eq!(im(&data).values[63], 1.0);
        assert_eq!(im(&data).values[64], 0.5);
        assert_eq!(im(&data).values[1], 0.0);
    }
}

#[test]
fn digits_csv_faults_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let short = write(dir.path(), "short.csv", b"1,2,3\n");
    assert_error_names(Dataset::load_digits_csv(&short).unwrap_err(), &short);
    let bad_pixel = digits_row(17, 1);
    let out_of_range = write(dir.path(), "range.csv", bad_pixel.as_bytes());
    assert_error_names(
        Dataset::load_digits_csv(&out_of_range).unwrap_err(),
        &out_of_range,
    );
    let bad_label = format!("{}\n{}x\n", digits_row(1, 1), digits_row(1, 1));
    let label = write(dir.path(), "label.csv", bad_label.as_bytes());
    assert_error_names(Dataset::load_digits_csv(&label).unwrap_err(), &label);
    let empty = write(dir.path(), "empty.csv", b"");
    assert_error_names(Dataset::load_digits_csv(&empty).unwrap_err(), &empty);
}

fn write_safetensors(
    path: &Path,
    x: (safetensors::Dtype, Vec<usize>, Vec<u8>),
    y: (safetensors::Dtype, Vec<usize>, Vec<u8>),
) {
    let xv = safetensors::tensor::TensorView::new(x.0, x.1, &x.2).unwrap();
    let yv = safetensors::tensor::TensorView::new(y.0, y.1, &y.2).unwrap();
    let bytes = safetensors::serialize([("x", xv), ("y", yv)], None).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn safetensors_loads_f32_nchw_and_u8_nhw() {
    use safetensors::Dtype;
    let dir = tempfile::tempdir().unwrap();
    let values = [0.5f32, -1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
    let x_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let y_bytes: Vec<u8> = [1i64, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let f32_path = dir.path().join("f.safetensors");
    write_safetensors(
        &f32_path,
        (Dtype::F32, vec![2, 1, 2, 2], x_bytes),
        (Dtype::I64, vec![2], y_bytes),
    );
    let data = Dataset::load_safetensors(&f32_path).unwrap();
    assert_eq!(
        (
            data.n,
            im(&data).channels,
            im(&data).height,
            im(&data).width
        ),
        (2, 1, 2, 2)
    );
    assert_eq!(im(&data).values, values.to_vec());
    assert_eq!(data.labels, vec![1, 0]);
    assert_eq!(data.num_classes, 2);

    let u8_path = dir.path().join("u.safetensors");
    write_safetensors(
        &u8_path,
        (Dtype::U8, vec![1, 1, 2], vec![0, 255]),
        (Dtype::U8, vec![1], vec![4]),
    );
    let data = Dataset::load_safetensors(&u8_path).unwrap();
    assert_eq!(
        (
            data.n,
            im(&data).channels,
            im(&data).height,
            im(&data).width
        ),
        (1, 1, 1, 2)
    );
    assert_eq!(im(&data).values, vec![0.0, 1.0]);
    assert_eq!(data.labels, vec![4]);

    let negative: Vec<u8> = (-1i32).to_le_bytes().to_vec();
    let bad_label = dir.path().join("neg.safetensors");
    write_safetensors(
        &bad_label,
        (Dtype::U8, vec![1, 1, 2], vec![0, 255]),
        (Dtype::I32, vec![1], negative),
    );
    assert_error_names(
        Dataset::load_safetensors(&bad_label).unwrap_err(),
        &bad_label,
    );

    let garbage = write(dir.path(), "garbage.safetensors", b"\x05\x00\x00");
    assert_error_names(Dataset::load_safetensors(&garbage).unwrap_err(), &garbage);
}

fn tiny(
    images: Vec<f32>,
    labels: Vec<u32>,
    channels: usize,
    height: usize,
    width: usize,
) -> Dataset {
    Dataset::numbered(
        Features::Images(Images {
            values: images,
            channels,
            height,
            width,
        }),
        labels,
    )
}

#[test]
fn resize_4x4_to_2x2_averages_blocks() {
    // Half-pixel centres put each output pixel midway between four inputs.
    let plane: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let data = tiny(plane, vec![0], 1, 4, 4).resized(2, 2).unwrap();
    assert_eq!((im(&data).height, im(&data).width), (2, 2));
    assert_close(&im(&data).values, &[2.5, 4.5, 10.5, 12.5]);
}

#[test]
fn resize_2x2_to_3x3_matches_hand_values() {
    // Output centres map to source -1/6 (clamped to 0), 0.5 and 7/6 (clamped to 1).
    let data = tiny(vec![0.0, 2.0, 4.0, 6.0], vec![0], 1, 2, 2)
        .resized(3, 3)
        .unwrap();
    assert_close(
        &im(&data).values,
        &[0.0, 1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0, 6.0],
    );
}

#[test]
fn grey_to_rgb_and_normalisation() {
    let grey = tiny(vec![0.0, 1.0, 0.5, 0.25], vec![0, 1], 1, 1, 2);
    let rgb = grey.to_rgb().unwrap();
    assert_eq!(im(&rgb).channels, 3);
    assert_eq!(
        im(&rgb).values,
        vec![
            0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.5, 0.25, 0.5, 0.25, 0.5, 0.25
        ]
    );
    let norm = rgb.normalized(&[0.5, 0.0, 1.0], &[0.5, 2.0, 0.25]).unwrap();
    assert_close(
        &im(&norm).values,
        &[
            -1.0, 1.0, 0.0, 0.5, -4.0, 0.0, 0.0, -0.5, 0.25, 0.125, -2.0, -3.0,
        ],
    );
    assert!(rgb.normalized(&[0.0], &[1.0]).is_err());
    assert!(rgb.normalized(&[0.0; 3], &[1.0, 0.0, 1.0]).is_err());
}

/// Ten examples of each of three classes; each image holds its own index.
fn counted(per_class: usize) -> Dataset {
    let n = 3 * per_class;
    tiny(
        (0..n).map(|i| i as f32).collect(),
        (0..n).map(|i| (i % 3) as u32).collect(),
        1,
        1,
        1,
    )
}

#[test]
fn split_is_disjoint_complete_stratified_and_seeded() {
    let data = counted(10);
    let (train, val) = data.split_indices(0.2, 7).unwrap();
    let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..30).collect::<Vec<_>>());
    assert_eq!(val.len(), 6);
    for class in 0..3 {
        assert_eq!(val.iter().filter(|&&i| i % 3 == class).count(), 2);
    }
    assert_eq!(
        data.split_indices(0.2, 7).unwrap(),
        (train.clone(), val.clone())
    );
    assert_ne!(data.split_indices(0.2, 8).unwrap().1, val);
    let (train_set, val_set) = data.split(0.2, 7).unwrap();
    let as_index = |d: &Dataset| im(d).values.iter().map(|&v| v as usize).collect::<Vec<_>>();
    assert_eq!(as_index(&train_set), train);
    assert_eq!(as_index(&val_set), val);
    assert!(data.split_indices(1.5, 7).is_err());
}

#[test]
fn k_shot_takes_exactly_k_per_class() {
    let data = counted(10);
    let shot = data.k_shot(4, 3).unwrap();
    assert_eq!(shot.n, 12);
    for class in 0..3 {
        assert_eq!(shot.labels.iter().filter(|&&l| l == class).count(), 4);
    }
    // Labels still match the images they came with.
    for (v, l) in im(&shot).values.iter().zip(&shot.labels) {
        assert_eq!(*v as u32 % 3, *l);
    }
    assert_eq!(data.k_shot(4, 3).unwrap(), shot);
    assert!(data.k_shot(11, 3).is_err());
}

#[test]
fn shuffle_is_a_seeded_permutation() {
    let data = counted(10);
    let a = data.shuffled(1).unwrap();
    assert_eq!(a, data.shuffled(1).unwrap());
    assert_ne!(im(&a).values, im(&data).values);
    let mut sorted = im(&a).values.clone();
    sorted.sort_by(f32::total_cmp);
    assert_eq!(sorted, im(&data).values);
    for (v, l) in im(&a).values.iter().zip(&a.labels) {
        assert_eq!(*v as u32 % 3, *l);
    }
}

#[test]
fn batches_cover_the_data_in_order() {
    let data = tiny(
        (0..10).map(|v| v as f32).collect(),
        vec![0, 1, 0, 1, 0],
        1,
        1,
        2,
    );
    let batches: Vec<_> = data.batches(2, false).collect();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[0].0.shape(), &[2, 1, 1, 2]);
    assert_eq!(batches[0].0.as_f32().unwrap(), &[0.0, 1.0, 2.0, 3.0]);
    assert_eq!(batches[2].0.shape(), &[1, 1, 1, 2]);
    assert_eq!(batches[2].0.as_f32().unwrap(), &[8.0, 9.0]);
    assert_eq!(batches[2].1, vec![0]);
    assert_eq!(data.batches(2, true).count(), 2);
    assert_eq!(data.batches(0, false).count(), 0);
}

fn save_png(path: &Path, image: image::DynamicImage) {
    image.save(path).unwrap();
}

#[test]
fn image_folder_loads_classes_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    for class in ["b_cat", "a_dog"] {
        std::fs::create_dir(dir.path().join(class)).unwrap();
    }
    let grey = image::GrayImage::from_raw(2, 1, vec![0, 255]).unwrap();
    save_png(&dir.path().join("a_dog/1.png"), grey.into());
    let rgb = image::RgbImage::from_raw(2, 1, vec![255, 0, 0, 0, 255, 51]).unwrap();
    save_png(&dir.path().join("b_cat/x.png"), rgb.into());
    std::fs::write(dir.path().join("b_cat/notes.txt"), "ignored").unwrap();

    let data = Dataset::load_image_folder(dir.path(), None).unwrap();
    assert_eq!(
        (
            data.n,
            im(&data).channels,
            im(&data).height,
            im(&data).width
        ),
        (2, 3, 1, 2)
    );
    assert_eq!(data.num_classes, 2);
    assert_eq!(data.label_names, ["a_dog", "b_cat"]);
    assert_eq!(data.labels, vec![0, 1]);
    assert_close(
        &im(&data).values,
        &[0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.2],
    );

    assert_error_names(
        Dataset::load_image_folder(dir.path(), Some((0, 4))).unwrap_err(),
        dir.path(),
    );
    let resized = Dataset::load_image_folder(dir.path(), Some((2, 4))).unwrap();
    assert_eq!((im(&resized).height, im(&resized).width), (2, 4));
    assert_close(&im(&resized).values[..4], &[0.0, 0.25, 0.75, 1.0]);

    let odd = image::GrayImage::from_raw(3, 1, vec![0, 0, 0]).unwrap();
    let odd_path = dir.path().join("b_cat/y.png");
    save_png(&odd_path, odd.into());
    assert_error_names(
        Dataset::load_image_folder(dir.path(), None).unwrap_err(),
        &odd_path,
    );

    let broken = write(dir.path(), "b_cat/z.png", b"not a png");
    assert_error_names(
        Dataset::load_image_folder(dir.path(), None).unwrap_err(),
        &broken,
    );
}

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("GLORA_FIXTURES")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/glora/fixtures"))
        })?;
    Some(dir.join("data"))
}

#[test]
fn digits_fixture_has_1797_images_of_10_classes() {
    let Some(path) = fixtures()
        .map(|d| d.join("digits.csv.gz"))
        .filter(|p| p.exists())
    else {
        eprintln!("skipping: digits.csv.gz fixture not found");
        return;
    };
    let data = Dataset::load_digits_csv(&path).unwrap();
    assert_eq!(data.n, 1797);
    assert_eq!(data.num_classes, 10);
    assert_eq!(
        (im(&data).channels, im(&data).height, im(&data).width),
        (1, 8, 8)
    );
    let (lo, hi) = im(&data)
        .values
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert_eq!((lo, hi), (0.0, 1.0));
    data.validate().unwrap();
}

#[test]
fn fashion_mnist_fixture_has_train_and_test_sets() {
    let Some(dir) = fixtures()
        .map(|d| d.join("fashion-mnist"))
        .filter(|p| p.exists())
    else {
        eprintln!("skipping: fashion-mnist fixture not found");
        return;
    };
    for (prefix, count) in [("train", 60_000), ("t10k", 10_000)] {
        let data = Dataset::load_idx(
            &dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
            &dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
        )
        .unwrap();
        assert_eq!(data.n, count);
        assert_eq!(
            (im(&data).channels, im(&data).height, im(&data).width),
            (1, 28, 28)
        );
        assert_eq!(data.num_classes, 10);
        data.validate().unwrap();
    }
}
