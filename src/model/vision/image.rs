//! Images in: decoding (PNG, JPEG, WebP with the `image` crate) and the Qwen2-VL image
//! processor's preprocessing, read from a model folder's `preprocessor_config.json`:
//! `smart_resize` (both sides multiples of patch × merge, the pixel count within
//! [min_pixels, max_pixels], the aspect ratio kept), bicubic resize, rescale by 1/255,
//! normalise with the processor's mean / std, and patchify into rows of
//! (channel, temporal, y, x) values ordered by 2×2 merge blocks, exactly as transformers'
//! `Qwen2VLImageProcessor` lays them out (its `patchify`).

use super::super::config::{json_object, Keys};
use super::super::{ModelError, Result};
use image::RgbImage;
use serde_json::{json, Value};
use std::path::Path;

/// CLIP's normalisation, the Qwen2-VL processor's default.
pub const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Decoded images larger than this many pixels are refused before decoding (PIL's
/// `MAX_IMAGE_PIXELS`): a small file can claim a huge canvas and exhaust memory.
pub const DEFAULT_MAX_SOURCE_PIXELS: u64 = 89_478_485;

/// The Qwen2-VL image processor's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessorConfig {
    /// Lower and upper bound on the resized image's pixel count (`size.shortest_edge` /
    /// `size.longest_edge`, or `min_pixels` / `max_pixels` in older files).
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub rescale_factor: f64,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub do_normalize: bool,
    /// Source images above this pixel count are refused (not a processor key: retort's guard).
    pub max_source_pixels: u64,
}

impl ImageProcessorConfig {
    /// Qwen2-VL-2B-Instruct's settings.
    pub fn qwen2_vl() -> ImageProcessorConfig {
        ImageProcessorConfig {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            rescale_factor: 1.0 / 255.0,
            do_resize: true,
            do_rescale: true,
            do_normalize: true,
            max_source_pixels: DEFAULT_MAX_SOURCE_PIXELS,
        }
    }

    /// Reads `preprocessor_config.json`; keys it lacks keep the Qwen2-VL defaults.
    pub fn from_file(path: &Path) -> Result<ImageProcessorConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        ImageProcessorConfig::from_json(&text, path)
    }

    pub fn from_json(text: &str, path: &Path) -> Result<ImageProcessorConfig> {
        let obj = json_object(text, path)?;
        let keys = Keys { obj: &obj, path };
        let mut cfg = ImageProcessorConfig::qwen2_vl();
        if let Some(size) = keys.present("size") {
            let size = size.as_object().ok_or_else(|| keys.bad("size", "an object", size))?;
            let inner = Keys { obj: size, path };
            cfg.min_pixels = inner.opt_usize("shortest_edge")?.unwrap_or(cfg.min_pixels);
            cfg.max_pixels = inner.opt_usize("longest_edge")?.unwrap_or(cfg.max_pixels);
        }
        // The older top-level keys win, as in transformers' constructor.
        cfg.min_pixels = keys.opt_usize("min_pixels")?.unwrap_or(cfg.min_pixels);
        cfg.max_pixels = keys.opt_usize("max_pixels")?.unwrap_or(cfg.max_pixels);
        cfg.patch_size = keys.opt_usize("patch_size")?.unwrap_or(cfg.patch_size);
        cfg.temporal_patch_size = keys.opt_usize("temporal_patch_size")?.unwrap_or(cfg.temporal_patch_size);
        cfg.merge_size = keys.opt_usize("merge_size")?.unwrap_or(cfg.merge_size);
        cfg.rescale_factor = keys.opt_f64("rescale_factor")?.unwrap_or(cfg.rescale_factor);
        cfg.do_resize = keys.opt_bool("do_resize")?.unwrap_or(true);
        cfg.do_rescale = keys.opt_bool("do_rescale")?.unwrap_or(true);
        cfg.do_normalize = keys.opt_bool("do_normalize")?.unwrap_or(true);
        for (key, slot) in [("image_mean", &mut cfg.image_mean), ("image_std", &mut cfg.image_std)] {
            if let Some(v) = keys.present(key) {
                let xs: Option<Vec<f32>> = v.as_array().map(|a| a.iter().filter_map(|x| x.as_f64().map(|x| x as f32)).collect());
                match xs {
                    Some(xs) if xs.len() == 3 => slot.copy_from_slice(&xs),
                    _ => return Err(keys.bad(key, "a list of three numbers", v)),
                }
            }
        }
        if cfg.patch_size == 0 || cfg.merge_size == 0 || cfg.temporal_patch_size == 0 {
            return Err(keys.bad("patch_size", "positive patch_size, merge_size and temporal_patch_size", &json!(cfg.patch_size)));
        }
        if cfg.min_pixels > cfg.max_pixels {
            return Err(keys.bad("size", "shortest_edge (min pixels) ≤ longest_edge (max pixels)", &json!([cfg.min_pixels, cfg.max_pixels])));
        }
        if cfg.image_std.contains(&0.0) {
            return Err(keys.bad("image_std", "non-zero values", &json!(cfg.image_std)));
        }
        Ok(cfg)
    }

    /// `preprocessor_config.json` as transformers writes it for `Qwen2VLImageProcessor`.
    pub fn to_json(&self) -> Value {
        json!({
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2VLProcessor",
            "do_convert_rgb": true,
            "do_resize": self.do_resize,
            "do_rescale": self.do_rescale,
            "do_normalize": self.do_normalize,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "rescale_factor": self.rescale_factor,
            "resample": 3,
            "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "patch_size": self.patch_size,
            "temporal_patch_size": self.temporal_patch_size,
            "merge_size": self.merge_size,
        })
    }

    /// Side lengths must be multiples of this: one merged token covers factor × factor pixels.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Length of one patch row: channels × temporal patch × patch × patch.
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// transformers' `smart_resize`: the (height, width) an image is resized to. Python's
/// `round` rounds halves to even, so `round_ties_even` here.
pub fn smart_resize(height: usize, width: usize, factor: usize, min_pixels: usize, max_pixels: usize) -> std::result::Result<(usize, usize), String> {
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if h.max(w) / h.min(w) > 200.0 {
        return Err(format!("aspect ratio {:.1} is above 200, which the Qwen2-VL processor refuses", h.max(w) / h.min(w)));
    }
    let mut h_bar = ((h / f).round_ties_even() * f) as usize;
    let mut w_bar = ((w / f).round_ties_even() * f) as usize;
    if h_bar * w_bar > max_pixels {
        let beta = (h * w / max_pixels as f64).sqrt();
        h_bar = factor.max(((h / beta / f).floor() * f) as usize);
        w_bar = factor.max(((w / beta / f).floor() * f) as usize);
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = ((h * beta / f).ceil() * f) as usize;
        w_bar = ((w * beta / f).ceil() * f) as usize;
    }
    Ok((h_bar, w_bar))
}

/// One preprocessed image: `rows` patch rows of `dim` values, and its patch grid
/// (temporal, height, width) — transformers' `pixel_values` and `image_grid_thw`.
#[derive(Clone, Debug, PartialEq)]
pub struct ImagePatches {
    pub values: Vec<f32>,
    pub rows: usize,
    pub dim: usize,
    pub grid: [usize; 3],
}

impl ImagePatches {
    /// Number of `<|image_pad|>` tokens the image becomes after the merger.
    pub fn tokens(&self, merge_size: usize) -> usize {
        self.grid[0] * self.grid[1] * self.grid[2] / (merge_size * merge_size)
    }
}

fn image_error(path: &Path, detail: String) -> ModelError {
    ModelError::Image { path: path.to_path_buf(), detail }
}

/// Decodes an image file to RGB, refusing an empty or unreadable file and one whose canvas is
/// above `max_source_pixels` (checked from the header, before decoding).
pub fn load_image(path: &Path, max_source_pixels: u64) -> Result<RgbImage> {
    let meta = std::fs::metadata(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
    if meta.len() == 0 {
        return Err(image_error(path, "the image file is empty (0 bytes)".into()));
    }
    let open = || -> Result<image::io::Reader<std::io::BufReader<std::fs::File>>> {
        image::io::Reader::open(path)
            .map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?
            .with_guessed_format()
            .map_err(|source| ModelError::Io { path: path.to_path_buf(), source })
    };
    let unreadable = |e: image::ImageError| image_error(path, format!("cannot decode the image ({e}); PNG, JPEG and WebP are supported"));
    let (w, h) = open()?.into_dimensions().map_err(unreadable)?;
    if w == 0 || h == 0 {
        return Err(image_error(path, format!("the image is empty ({w}×{h} pixels)")));
    }
    let pixels = w as u64 * h as u64;
    if pixels > max_source_pixels {
        return Err(image_error(
            path,
            format!("the image is {w}×{h} = {pixels} pixels, above the budget of {max_source_pixels}; downscale it first"),
        ));
    }
    Ok(open()?.decode().map_err(unreadable)?.to_rgb8())
}

/// Resizes (bicubic, as the processor's `resample: 3`), rescales, normalises and patchifies.
pub fn preprocess(img: &RgbImage, cfg: &ImageProcessorConfig, path: &Path) -> Result<ImagePatches> {
    let (h, w) = (img.height() as usize, img.width() as usize);
    let resized;
    let img = if cfg.do_resize {
        let (rh, rw) = smart_resize(h, w, cfg.factor(), cfg.min_pixels, cfg.max_pixels).map_err(|e| image_error(path, e))?;
        if (rh, rw) == (h, w) {
            img
        } else {
            resized = image::imageops::resize(img, rw as u32, rh as u32, image::imageops::FilterType::CatmullRom);
            &resized
        }
    } else {
        img
    };
    let (h, w) = (img.height() as usize, img.width() as usize);
    let (p, m, t) = (cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size);
    if h % (p * m) != 0 || w % (p * m) != 0 {
        return Err(image_error(path, format!("{w}×{h} pixels is not a multiple of patch × merge = {} (turn on do_resize)", p * m)));
    }
    // Per channel: x · rescale, then (x − mean) / std, in f64 then rounded to f32.
    let plane: Vec<Vec<f32>> = (0..3)
        .map(|c| {
            img.pixels()
                .map(|px| {
                    let mut x = px.0[c] as f64;
                    if cfg.do_rescale {
                        x *= cfg.rescale_factor;
                    }
                    if cfg.do_normalize {
                        x = (x - cfg.image_mean[c] as f64) / cfg.image_std[c] as f64;
                    }
                    x as f32
                })
                .collect()
        })
        .collect();
    let (gh, gw) = (h / p, w / p);
    let dim = cfg.patch_dim();
    let mut values = Vec::with_capacity(gh * gw * dim);
    for bh in 0..gh / m {
        for bw in 0..gw / m {
            for mh in 0..m {
                for mw in 0..m {
                    let (row, col) = (bh * m + mh, bw * m + mw);
                    for channel in &plane {
                        // The temporal copies of a still image are identical frames.
                        for _ in 0..t {
                            for py in 0..p {
                                let start = (row * p + py) * w + col * p;
                                values.extend_from_slice(&channel[start..start + p]);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(ImagePatches { values, rows: gh * gw, dim, grid: [1, gh, gw] })
}

/// [`load_image`] then [`preprocess`].
pub fn load_and_preprocess(path: &Path, cfg: &ImageProcessorConfig) -> Result<ImagePatches> {
    preprocess(&load_image(path, cfg.max_source_pixels)?, cfg, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_matches_hand_computation() {
        // Already multiples of 28 inside the budget: unchanged.
        assert_eq!(smart_resize(56, 84, 28, 56 * 56, 28 * 28 * 1280), Ok((56, 84)));
        // 42/28 = 1.5 and 70/28 = 2.5 both round to 2 (halves to even, as Python does).
        assert_eq!(smart_resize(42, 70, 28, 1, 1 << 30), Ok((56, 56)));
        // Over the budget: beta = sqrt(37·53/1024) = 1.3838; floor(37/β/8) = 3, floor(53/β/8) = 4.
        assert_eq!(smart_resize(37, 53, 8, 64, 1024), Ok((24, 32)));
        // Under the minimum: 5×9 rounds to 8×8 = 64, not below 64, so it stays.
        assert_eq!(smart_resize(5, 9, 8, 64, 1024), Ok((8, 8)));
        // 4×4 rounds to 0×0 < 64: beta = sqrt(64/16) = 2 → ceil(8/8)·8 = 8.
        assert_eq!(smart_resize(4, 4, 8, 64, 1024), Ok((8, 8)));
        assert!(smart_resize(1, 300, 8, 64, 1 << 20).unwrap_err().contains("aspect ratio"));
    }

    #[test]
    fn patches_follow_the_merge_block_order() {
        // An 8×8 image with patch 2, merge 2: value at (y, x) = 8y + x in every channel, no
        // normalisation. Patch row 1 is block (0,0)'s top-right patch: rows 0–1, cols 2–3.
        let img = RgbImage::from_fn(8, 8, |x, y| image::Rgb([(8 * y + x) as u8; 3]));
        let cfg = ImageProcessorConfig {
            patch_size: 2,
            merge_size: 2,
            temporal_patch_size: 2,
            do_resize: false,
            do_rescale: false,
            do_normalize: false,
            ..ImageProcessorConfig::qwen2_vl()
        };
        let p = preprocess(&img, &cfg, Path::new("mem")).unwrap();
        assert_eq!((p.rows, p.dim, p.grid), (16, 24, [1, 4, 4]));
        let row = |r: usize| &p.values[r * 24..(r + 1) * 24];
        // channel 0, temporal 0: [2, 3, 10, 11]; the temporal copy repeats it.
        assert_eq!(&row(1)[..8], &[2.0, 3.0, 10.0, 11.0, 2.0, 3.0, 10.0, 11.0]);
        // Row 2 is block (0,0)'s bottom-left patch (rows 2–3, cols 0–1); row 4 starts block (0,1).
        assert_eq!(&row(2)[..4], &[16.0, 17.0, 24.0, 25.0]);
        assert_eq!(&row(4)[..4], &[4.0, 5.0, 12.0, 13.0]);
        assert_eq!(p.tokens(2), 4);
    }

    #[test]
    fn bad_images_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.png");
        std::fs::write(&empty, b"").unwrap();
        let err = load_image(&empty, DEFAULT_MAX_SOURCE_PIXELS).unwrap_err().to_string();
        assert!(err.contains("empty.png") && err.contains("empty"), "{err}");
        let junk = dir.path().join("junk.jpg");
        std::fs::write(&junk, b"this is not an image").unwrap();
        let err = load_image(&junk, DEFAULT_MAX_SOURCE_PIXELS).unwrap_err().to_string();
        assert!(err.contains("junk.jpg") && err.contains("cannot decode"), "{err}");
        let big = dir.path().join("big.png");
        RgbImage::new(40, 30).save(&big).unwrap();
        let err = load_image(&big, 1000).unwrap_err().to_string();
        assert!(err.contains("big.png") && err.contains("40×30 = 1200 pixels") && err.contains("1000"), "{err}");
        assert_eq!(load_image(&big, 1200).unwrap().dimensions(), (40, 30));
        let err = load_image(&dir.path().join("missing.png"), 1000).unwrap_err().to_string();
        assert!(err.contains("missing.png"), "{err}");
    }

    #[test]
    fn processor_config_reads_both_layouts() {
        let p = Path::new("preprocessor_config.json");
        let new = ImageProcessorConfig::from_json(r#"{"size": {"shortest_edge": 64, "longest_edge": 1024}, "patch_size": 4}"#, p).unwrap();
        assert_eq!((new.min_pixels, new.max_pixels, new.patch_size, new.merge_size), (64, 1024, 4, 2));
        let old = ImageProcessorConfig::from_json(r#"{"min_pixels": 3136, "max_pixels": 12845056, "image_mean": [0.5, 0.5, 0.5]}"#, p).unwrap();
        assert_eq!((old.min_pixels, old.max_pixels, old.image_mean), (3136, 12845056, [0.5; 3]));
        let round = ImageProcessorConfig::from_json(&old.to_json().to_string(), p).unwrap();
        assert_eq!(round, old);
        let err = ImageProcessorConfig::from_json(r#"{"image_std": [1, 0]}"#, p).unwrap_err().to_string();
        assert!(err.contains("image_std") && err.contains("preprocessor_config.json"), "{err}");
    }
}
