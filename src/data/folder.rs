//! Image folders: `root/train/<class>/*.png|jpg` and `root/test/<class>/…`, decoded with the
//! `image` crate and converted to a fixed size and channel count. Classes are the
//! sub-folder names of `train/`, sorted.

use super::{check_classes_present, check_image_shape, DataError, Dataset, Split, MAX_IMAGE_SIDE};
use image::imageops::FilterType;
use std::path::Path;

fn list_sorted(dir: &Path) -> Result<Vec<std::path::PathBuf>, DataError> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// Appends `img`, resized to `[c, h, w]` (c = 1 grey, else RGB) and laid out CHW, to `out`.
pub fn to_pixels(img: &image::DynamicImage, shape: [usize; 3], out: &mut Vec<u8>) {
    let [c, h, w] = shape;
    let img = img.resize_exact(w as u32, h as u32, FilterType::Triangle);
    if c == 1 {
        out.extend_from_slice(img.to_luma8().as_raw());
    } else {
        let rgb = img.to_rgb8();
        // HWC → CHW.
        for ch in 0..3 {
            out.extend(rgb.as_raw().iter().skip(ch).step_by(3));
        }
    }
}

fn load_part(dir: &Path, class_names: &[String], shape: [usize; 3]) -> Result<Dataset, DataError> {
    let mut data = Dataset {
        pixels: Vec::new(),
        labels: Vec::new(),
        shape,
        classes: class_names.len(),
        class_names: class_names.to_vec(),
    };
    for (label, name) in class_names.iter().enumerate() {
        let class_dir = dir.join(name);
        if !class_dir.is_dir() {
            continue;
        }
        for path in list_sorted(&class_dir)? {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(|e| e.to_lowercase());
            if !matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg")) {
                continue;
            }
            to_pixels(&decode(&path)?, shape, &mut data.pixels);
            data.labels.push(label);
        }
    }
    if data.is_empty() {
        return Err(DataError::inconsistent(
            dir,
            "no .png/.jpg images in any class folder",
        ));
    }
    Ok(data)
}

/// Decodes one image, refusing (before decoding) dimensions beyond [`MAX_IMAGE_SIDE`]
/// and decoder allocations beyond 256 MiB, whatever the file's header claims.
fn decode(path: &Path) -> Result<image::DynamicImage, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_image_bytes(path, &bytes)
}

/// Decodes an encoded image (`path` names it in errors) under the loader's limits (4096 pixels
/// a side, 256 MiB of decoder allocations).
pub fn decode_image_bytes(path: &Path, bytes: &[u8]) -> Result<image::DynamicImage, DataError> {
    let bad = |reason: String| DataError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE as u32);
    limits.max_image_height = Some(MAX_IMAGE_SIDE as u32);
    limits.max_alloc = Some(256 << 20);
    reader.limits(limits);
    reader.decode().map_err(|e| bad(e.to_string()))
}

/// Loads `root/train` and `root/test` image folders at `[channels, height, width]`
/// (channels 1 for grayscale or 3 for RGB).
pub fn load_image_folder(root: &Path, shape: [usize; 3]) -> Result<Split, DataError> {
    if !matches!(shape[0], 1 | 3) {
        return Err(DataError::inconsistent(
            root,
            format!("unsupported image shape {shape:?} (channels must be 1 or 3)"),
        ));
    }
    check_image_shape(root, shape)?;
    let train_dir = root.join("train");
    let mut class_names = Vec::new();
    for dir in list_sorted(&train_dir)?.into_iter().filter(|p| p.is_dir()) {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            return Err(DataError::inconsistent(
                &dir,
                "class folder names must be UTF-8 (they become class names)",
            ));
        };
        class_names.push(name.to_string());
    }
    if class_names.is_empty() {
        return Err(DataError::inconsistent(&train_dir, "no class folders"));
    }
    let train = load_part(&train_dir, &class_names, shape)?;
    check_classes_present(&train_dir, &train)?;
    Ok(Split {
        train,
        test: load_part(&root.join("test"), &class_names, shape)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resizes_and_converts() {
        let root = tempfile::tempdir().unwrap();
        for (split, class, name, colour) in [
            ("train", "cat", "a.png", [255u8, 0, 0]),
            ("train", "dog", "b.png", [0, 0, 255]),
            ("test", "dog", "c.png", [0, 255, 0]),
        ] {
            let d = root.path().join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            image::RgbImage::from_pixel(5, 3, image::Rgb(colour))
                .save(d.join(name))
                .unwrap();
        }
        std::fs::write(root.path().join("train/cat/notes.txt"), "not an image").unwrap();
        let s = load_image_folder(root.path(), [3, 4, 4]).unwrap();
        assert_eq!(s.train.class_names, vec!["cat", "dog"]);
        assert_eq!(
            (s.train.labels.clone(), s.test.labels.clone()),
            (vec![0, 1], vec![1])
        );
        // Red cat: channel 0 all 255, channel 2 all 0.
        assert!(s.train.pixels[..16].iter().all(|&p| p == 255));
        assert!(s.train.pixels[32..48].iter().all(|&p| p == 0));
        let g = load_image_folder(root.path(), [1, 2, 2]).unwrap();
        assert_eq!(g.train.pixels.len(), 8);
        std::fs::write(root.path().join("test/dog/broken.png"), b"not a png").unwrap();
        let e = load_image_folder(root.path(), [1, 2, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("broken.png"), "{e}");
        std::fs::remove_file(root.path().join("test/dog/broken.png")).unwrap();
        // An empty class folder, an absurd size: errors naming the problem.
        std::fs::create_dir_all(root.path().join("train/emu")).unwrap();
        let e = load_image_folder(root.path(), [1, 2, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("class 2 (emu) has no training image"), "{e}");
        std::fs::remove_dir(root.path().join("train/emu")).unwrap();
        let e = load_image_folder(root.path(), [3, 100_000, 100_000])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn class_folders_with_non_utf8_names_are_errors_not_dropped() {
        use std::os::unix::ffi::OsStrExt;
        let root = tempfile::tempdir().unwrap();
        let bad = std::ffi::OsStr::from_bytes(b"caf\xe9");
        for class in [std::ffi::OsStr::new("ok"), bad] {
            let d = root.path().join("train").join(class);
            std::fs::create_dir_all(&d).unwrap();
            image::GrayImage::from_pixel(2, 2, image::Luma([1]))
                .save(d.join("a.png"))
                .unwrap();
        }
        let e = load_image_folder(root.path(), [1, 2, 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be UTF-8"), "{e}");
    }

    #[test]
    fn a_header_claiming_a_huge_image_is_refused_before_decoding() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("train/a");
        std::fs::create_dir_all(&d).unwrap();
        // A valid 1×1 PNG whose IHDR claims 100000×100000 pixels (CRC fixed up).
        let mut png = Vec::new();
        image::GrayImage::from_pixel(1, 1, image::Luma([7]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        std::fs::write(d.join("big.png"), &png).unwrap();
        let e = load_image_folder(root.path(), [1, 4, 4]).unwrap_err();
        assert!(matches!(e, DataError::Image { .. }), "{e}");
        assert!(e.to_string().contains("big.png"), "{e}");
    }

    /// CRC-32 (IEEE) of a PNG chunk's type and data.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
