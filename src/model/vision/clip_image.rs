//! LLaVA's image preprocessing, read from `preprocessor_config.json`: transformers'
//! `CLIPImageProcessor` / `LlavaImageProcessor` (optionally pad to a square with the mean colour,
//! resize the shortest edge with bicubic keeping the aspect ratio, center crop) and
//! `SiglipImageProcessor` (resize to a fixed height × width), then rescale by 1/255 and
//! normalise with the processor's mean / std. The result is cut into patch rows of
//! (channel, y, x) values in row-major patch order: the rows the ViT's patch embedding projects.

use super::super::config::{json_object, Keys};
use super::super::{ModelError, Result};
use super::image::{load_image, ImagePatches, CLIP_MEAN, CLIP_STD, DEFAULT_MAX_SOURCE_PIXELS};
use image::RgbImage;
use serde_json::{json, Value};
use std::path::Path;

/// How the processor resizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// The shorter side to this length, the other by the aspect ratio (`size.shortest_edge`).
    ShortestEdge(usize),
    /// Exactly height × width (`size.height` / `size.width`).
    Exact(usize, usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClipProcessorConfig {
    /// `image_processor_type`, written back on save.
    pub processor_type: String,
    pub do_resize: bool,
    pub resize: Resize,
    /// (height, width) of the center crop, when `do_center_crop`.
    pub crop: Option<(usize, usize)>,
    /// LLaVA's pad-to-square with the mean colour, before resizing (`do_pad`).
    pub do_pad: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub rescale_factor: f64,
    pub do_rescale: bool,
    pub do_normalize: bool,
    pub max_source_pixels: u64,
}

impl ClipProcessorConfig {
    /// llava-1.5's processor at `side` pixels (336 for ViT-L/14-336).
    pub fn clip(side: usize) -> ClipProcessorConfig {
        ClipProcessorConfig {
            processor_type: "CLIPImageProcessor".into(),
            do_resize: true,
            resize: Resize::ShortestEdge(side),
            crop: Some((side, side)),
            do_pad: false,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            rescale_factor: 1.0 / 255.0,
            do_rescale: true,
            do_normalize: true,
            max_source_pixels: DEFAULT_MAX_SOURCE_PIXELS,
        }
    }

    pub fn from_file(path: &Path) -> Result<ClipProcessorConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        ClipProcessorConfig::from_json(&text, path)
    }

    /// Keys the file lacks keep CLIP's defaults (224, crop 224, CLIP mean / std).
    pub fn from_json(text: &str, path: &Path) -> Result<ClipProcessorConfig> {
        let obj = json_object(text, path)?;
        let keys = Keys { obj: &obj, path };
        let mut cfg = ClipProcessorConfig::clip(224);
        let siglip = obj.get("image_processor_type").and_then(Value::as_str).is_some_and(|t| t.to_lowercase().contains("siglip"));
        if let Some(t) = obj.get("image_processor_type").and_then(Value::as_str) {
            cfg.processor_type = t.to_string();
        }
        if siglip {
            // SigLIP's defaults: 224×224, no crop, mean / std 0.5.
            cfg.resize = Resize::Exact(224, 224);
            cfg.crop = None;
            cfg.image_mean = [0.5; 3];
            cfg.image_std = [0.5; 3];
        }
        let pair = |key: &str, v: &Value| -> Result<(Option<usize>, Option<(usize, usize)>)> {
            if let Some(n) = v.as_u64() {
                return Ok((Some(n as usize), None));
            }
            let o = v.as_object().ok_or_else(|| keys.bad(key, "a number or an object", v))?;
            let inner = Keys { obj: o, path };
            match (inner.opt_usize("shortest_edge")?, inner.opt_usize("height")?, inner.opt_usize("width")?) {
                (Some(s), _, _) => Ok((Some(s), None)),
                (None, Some(h), Some(w)) => Ok((None, Some((h, w)))),
                _ => Err(keys.bad(key, "{\"shortest_edge\": N} or {\"height\": H, \"width\": W}", v)),
            }
        };
        if let Some(v) = keys.present("size") {
            cfg.resize = match pair("size", v)? {
                (Some(n), _) if siglip => Resize::Exact(n, n),
                (Some(n), _) => Resize::ShortestEdge(n),
                (None, Some((h, w))) => Resize::Exact(h, w),
                _ => unreachable!("pair returns one of the two"),
            };
        }
        let do_crop = keys.opt_bool("do_center_crop")?.unwrap_or(cfg.crop.is_some());
        if let Some(v) = keys.present("crop_size") {
            cfg.crop = match pair("crop_size", v)? {
                (Some(n), _) => Some((n, n)),
                (None, hw) => hw,
            };
        }
        if !do_crop {
            cfg.crop = None;
        }
        cfg.do_pad = keys.opt_bool("do_pad")?.unwrap_or(false);
        cfg.do_resize = keys.opt_bool("do_resize")?.unwrap_or(true);
        cfg.do_rescale = keys.opt_bool("do_rescale")?.unwrap_or(true);
        cfg.do_normalize = keys.opt_bool("do_normalize")?.unwrap_or(true);
        cfg.rescale_factor = keys.opt_f64("rescale_factor")?.unwrap_or(cfg.rescale_factor);
        for (key, slot) in [("image_mean", &mut cfg.image_mean), ("image_std", &mut cfg.image_std)] {
            if let Some(v) = keys.present(key) {
                let xs: Option<Vec<f32>> = v.as_array().map(|a| a.iter().filter_map(|x| x.as_f64().map(|x| x as f32)).collect());
                match xs {
                    Some(xs) if xs.len() == 3 => slot.copy_from_slice(&xs),
                    _ => return Err(keys.bad(key, "a list of three numbers", v)),
                }
            }
        }
        if cfg.image_std.contains(&0.0) {
            return Err(keys.bad("image_std", "non-zero values", &json!(cfg.image_std)));
        }
        Ok(cfg)
    }

    pub fn to_json(&self) -> Value {
        let size = match self.resize {
            Resize::ShortestEdge(n) => json!({"shortest_edge": n}),
            Resize::Exact(h, w) => json!({"height": h, "width": w}),
        };
        let mut out = json!({
            "image_processor_type": self.processor_type,
            "do_convert_rgb": true,
            "do_resize": self.do_resize,
            "size": size,
            "resample": 3,
            "do_center_crop": self.crop.is_some(),
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
        });
        if let Some((h, w)) = self.crop {
            out["crop_size"] = json!({"height": h, "width": w});
        }
        if self.do_pad {
            out["do_pad"] = json!(true);
        }
        out
    }

    /// (height, width) of the processed image of a `h × w` source.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        let (mut h, mut w) = if self.do_pad { (h.max(w), h.max(w)) } else { (h, w) };
        if self.do_resize {
            (h, w) = resized(h, w, self.resize);
        }
        self.crop.unwrap_or((h, w))
    }
}

/// transformers' `get_resize_output_image_size(default_to_square=False)`: the short side to
/// `n`, the long one to `int(n · long / short)`.
fn resized(h: usize, w: usize, r: Resize) -> (usize, usize) {
    match r {
        Resize::Exact(rh, rw) => (rh, rw),
        Resize::ShortestEdge(n) => {
            let (short, long) = if w <= h { (w, h) } else { (h, w) };
            let new_long = (n as f64 * long as f64 / short as f64) as usize;
            if w <= h {
                (new_long, n)
            } else {
                (n, new_long)
            }
        }
    }
}

fn image_error(path: &Path, detail: String) -> ModelError {
    ModelError::Image { path: path.to_path_buf(), detail }
}

/// Pads to a square with `colour`, the image centred (`LlavaImageProcessor.pad_to_square`).
fn pad_to_square(img: &RgbImage, colour: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    let side = w.max(h);
    let mut out = RgbImage::from_pixel(side, side, image::Rgb(colour));
    let (dx, dy) = ((side - w) / 2, (side - h) / 2);
    image::imageops::replace(&mut out, img, dx as i64, dy as i64);
    out
}

/// Pads, resizes (bicubic, the processors' `resample: 3`), crops, rescales, normalises and cuts
/// into `patch`-sized rows; the result must be `side × side` (the tower's `image_size`).
pub fn preprocess(img: &RgbImage, cfg: &ClipProcessorConfig, patch: usize, side: usize, path: &Path) -> Result<ImagePatches> {
    let padded;
    let mut img = img;
    if cfg.do_pad && img.width() != img.height() {
        // transformers: tuple(int(x * 255) for x in image_mean), truncated.
        let colour = cfg.image_mean.map(|m| (m as f64 * 255.0) as u8);
        padded = pad_to_square(img, colour);
        img = &padded;
    }
    let resized_img;
    if cfg.do_resize {
        let (h, w) = (img.height() as usize, img.width() as usize);
        let (rh, rw) = resized(h, w, cfg.resize);
        if rh == 0 || rw == 0 {
            return Err(image_error(path, format!("{w}×{h} pixels resizes to {rw}×{rh}")));
        }
        if (rh, rw) != (h, w) {
            resized_img = image::imageops::resize(img, rw as u32, rh as u32, image::imageops::FilterType::CatmullRom);
            img = &resized_img;
        }
    }
    let (h, w) = (img.height() as usize, img.width() as usize);
    let (top, left, oh, ow) = match cfg.crop {
        Some((ch, cw)) if ch <= h && cw <= w => ((h - ch) / 2, (w - cw) / 2, ch, cw),
        Some((ch, cw)) => return Err(image_error(path, format!("{w}×{h} pixels is smaller than the center crop {cw}×{ch}"))),
        None => (0, 0, h, w),
    };
    if (oh, ow) != (side, side) {
        return Err(image_error(path, format!("the processor makes {ow}×{oh} pixels but the vision tower takes {side}×{side}")));
    }
    // Per channel: x · rescale, then (x − mean) / std, in f64 then rounded to f32.
    let value = |y: usize, x: usize, c: usize| -> f32 {
        let mut v = img.get_pixel((left + x) as u32, (top + y) as u32).0[c] as f64;
        if cfg.do_rescale {
            v *= cfg.rescale_factor;
        }
        if cfg.do_normalize {
            v = (v - cfg.image_mean[c] as f64) / cfg.image_std[c] as f64;
        }
        v as f32
    };
    let g = side / patch;
    let dim = 3 * patch * patch;
    let mut values = Vec::with_capacity(g * g * dim);
    for gy in 0..g {
        for gx in 0..g {
            for c in 0..3 {
                for py in 0..patch {
                    for px in 0..patch {
                        values.push(value(gy * patch + py, gx * patch + px, c));
                    }
                }
            }
        }
    }
    Ok(ImagePatches { values, rows: g * g, dim, grid: [1, g, g] })
}

/// [`load_image`] then [`preprocess`].
pub fn load_and_preprocess(path: &Path, cfg: &ClipProcessorConfig, patch: usize, side: usize) -> Result<ImagePatches> {
    preprocess(&load_image(path, cfg.max_source_pixels)?, cfg, patch, side, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_the_aspect_ratio_truncating_the_long_side() {
        // 37×53 (h×w) to shortest edge 16: long = int(16 · 53 / 37) = int(22.918) = 22.
        assert_eq!(resized(37, 53, Resize::ShortestEdge(16)), (16, 22));
        assert_eq!(resized(53, 37, Resize::ShortestEdge(16)), (22, 16));
        assert_eq!(resized(9, 5, Resize::Exact(16, 16)), (16, 16));
    }

    #[test]
    fn pad_crop_and_patch_order_match_hand_computation() {
        // A 2×4 (h×w) image padded to 4×4 (rows 1–2 hold it), no resize, no normalisation,
        // patch 2: patch row 0 is the top-left 2×2 block, channel-major.
        let img = RgbImage::from_fn(4, 2, |x, y| image::Rgb([(10 * y + x) as u8, 100, 200]));
        let cfg = ClipProcessorConfig {
            do_resize: false,
            crop: None,
            do_pad: true,
            do_rescale: false,
            do_normalize: false,
            image_mean: [0.5, 0.25, 0.0],
            ..ClipProcessorConfig::clip(4)
        };
        let p = preprocess(&img, &cfg, 2, 4, Path::new("mem")).unwrap();
        assert_eq!((p.rows, p.dim, p.grid), (4, 12, [1, 2, 2]));
        // Pad colour int(0.5·255) = 127 on row 0; row 1 is the image's row 0: 0, 1.
        assert_eq!(&p.values[..4], &[127.0, 127.0, 0.0, 1.0]);
        assert_eq!(&p.values[4..8], &[63.0, 63.0, 100.0, 100.0]);
        // Patch row 1 is the top-right block: columns 2–3.
        assert_eq!(&p.values[12..16], &[127.0, 127.0, 2.0, 3.0]);
        // Patch row 2 (bottom-left): image row 1 then padding.
        assert_eq!(&p.values[24..28], &[10.0, 11.0, 127.0, 127.0]);
        let err = preprocess(&img, &cfg, 2, 8, Path::new("x.png")).unwrap_err().to_string();
        assert!(err.contains("x.png") && err.contains("8×8"), "{err}");
    }

    #[test]
    fn processor_configs_of_both_kinds_parse() {
        let p = Path::new("preprocessor_config.json");
        let clip = ClipProcessorConfig::from_json(
            r#"{"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}, "do_center_crop": true}"#,
            p,
        )
        .unwrap();
        assert_eq!((clip.resize, clip.crop, clip.do_pad), (Resize::ShortestEdge(336), Some((336, 336)), false));
        assert_eq!(clip.output_size(480, 640), (336, 336));
        let sig = ClipProcessorConfig::from_json(r#"{"image_processor_type": "SiglipImageProcessor", "size": {"height": 384, "width": 384}}"#, p).unwrap();
        assert_eq!((sig.resize, sig.crop, sig.image_mean), (Resize::Exact(384, 384), None, [0.5; 3]));
        let back = ClipProcessorConfig::from_json(&clip.to_json().to_string(), p).unwrap();
        assert_eq!(back, clip);
        let err = ClipProcessorConfig::from_json(r#"{"size": {"longest_edge": 3}}"#, p).unwrap_err().to_string();
        assert!(err.contains("size") && err.contains("preprocessor_config.json"), "{err}");
    }
}
