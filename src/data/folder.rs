//! Image folders: `root/train/<class>/*.png|jpg` and `root/test/<class>/…`, decoded with the
//! `image` crate and converted to a fixed size and channel count. Classes are the
//! sub-folder names of `train/`, sorted.

use super::{DataError, Dataset, Split};
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

fn load_part(dir: &Path, class_names: &[String], shape: [usize; 3]) -> Result<Dataset, DataError> {
    let [c, h, w] = shape;
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
            let img = image::open(&path).map_err(|e| DataError::Image {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let img = img.resize_exact(w as u32, h as u32, FilterType::Triangle);
            match c {
                1 => data.pixels.extend_from_slice(img.to_luma8().as_raw()),
                3 => {
                    let rgb = img.to_rgb8();
                    // HWC → CHW.
                    for ch in 0..3 {
                        data.pixels.extend(rgb.as_raw().iter().skip(ch).step_by(3));
                    }
                }
                _ => unreachable!("channels checked by the caller"),
            }
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

/// Loads `root/train` and `root/test` image folders at `[channels, height, width]`
/// (channels 1 for grayscale or 3 for RGB).
pub fn load_image_folder(root: &Path, shape: [usize; 3]) -> Result<Split, DataError> {
    if !matches!(shape[0], 1 | 3) || shape[1] == 0 || shape[2] == 0 {
        return Err(DataError::inconsistent(
            root,
            format!("unsupported image shape {shape:?} (channels must be 1 or 3)"),
        ));
    }
    let train_dir = root.join("train");
    let class_names: Vec<String> = list_sorted(&train_dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if class_names.is_empty() {
        return Err(DataError::inconsistent(&train_dir, "no class folders"));
    }
    Ok(Split {
        train: load_part(&train_dir, &class_names, shape)?,
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
    }
}
