//! Qwen2-VL's multimodal rotary positions (M-RoPE) for one sequence: text tokens count up on
//! all three axes alike; an image's tokens, laid out row by row on its merged grid, take
//! temporal = start, height = start + row, width = start + column; the text after an image
//! resumes at start + max(rows, columns). transformers' `Qwen2VLModel.get_rope_index`.

/// The (temporal, height, width) positions of `ids` and the rope delta (the last position + 1
/// minus the length), which later decoding steps add to their plain position. `grids` are the
/// images' patch grids in order of appearance; each image is `t·h·w / merge²` consecutive
/// `image_token`s.
pub fn rope_index(ids: &[u32], image_token: u32, grids: &[[usize; 3]], merge: usize) -> Result<([Vec<u32>; 3], i64), String> {
    let mut pos: [Vec<u32>; 3] = [Vec::with_capacity(ids.len()), Vec::with_capacity(ids.len()), Vec::with_capacity(ids.len())];
    let mut next = 0u32;
    let mut images = grids.iter();
    let mut i = 0;
    while i < ids.len() {
        if ids[i] != image_token {
            for axis in &mut pos {
                axis.push(next);
            }
            next += 1;
            i += 1;
            continue;
        }
        let Some(&[t, h, w]) = images.next() else {
            return Err(format!("more image tokens than images ({} given)", grids.len()));
        };
        let (gh, gw) = (h / merge, w / merge);
        let count = t * gh * gw;
        if ids.len() < i + count || ids[i..i + count].iter().any(|&x| x != image_token) {
            return Err(format!("image {} needs {count} consecutive image tokens at position {i}", grids.len() - images.len()));
        }
        for ti in 0..t {
            for row in 0..gh {
                for col in 0..gw {
                    pos[0].push(next + ti as u32);
                    pos[1].push(next + row as u32);
                    pos[2].push(next + col as u32);
                }
            }
        }
        next += gh.max(gw) as u32;
        i += count;
    }
    if images.len() != 0 {
        return Err(format!("{} image(s) given but only {} placed in the prompt", grids.len(), grids.len() - images.len()));
    }
    Ok((pos, next as i64 - ids.len() as i64))
}

/// Replaces each single `image_token` of `ids` by `counts[k]` copies for the k-th image (what
/// the processor does to the chat template's one `<|image_pad|>` per image).
pub fn expand_image_tokens(ids: &[u32], image_token: u32, counts: &[usize]) -> Result<Vec<u32>, String> {
    let found = ids.iter().filter(|&&x| x == image_token).count();
    if found != counts.len() {
        return Err(format!("the prompt has {found} image placeholder(s) but {} image(s) were given", counts.len()));
    }
    let mut out = Vec::with_capacity(ids.len() + counts.iter().sum::<usize>());
    let mut k = 0;
    for &x in ids {
        if x == image_token {
            out.extend(std::iter::repeat_n(image_token, counts[k]));
            k += 1;
        } else {
            out.push(x);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_text_image_text_by_hand() {
        // [a, b, <img 2×3 merged>, c]: a=0, b=1; the image starts at 2 with rows 2..3 and
        // columns 2..4; c resumes at 2 + max(2, 3) = 5. Delta = 6 - 9 = -3.
        let ids = [7, 8, 9, 9, 9, 9, 9, 9, 5];
        let (pos, delta) = rope_index(&ids, 9, &[[1, 4, 6]], 2).unwrap();
        assert_eq!(pos[0], [0, 1, 2, 2, 2, 2, 2, 2, 5]);
        assert_eq!(pos[1], [0, 1, 2, 2, 2, 3, 3, 3, 5]);
        assert_eq!(pos[2], [0, 1, 2, 3, 4, 2, 3, 4, 5]);
        assert_eq!(delta, -3);
        assert!(rope_index(&ids, 9, &[], 2).unwrap_err().contains("more image tokens"));
        assert!(rope_index(&ids[..5], 9, &[[1, 4, 6]], 2).unwrap_err().contains("consecutive"));
        assert!(rope_index(&[1, 2], 9, &[[1, 4, 6]], 2).unwrap_err().contains("only 0 placed"));
    }

    #[test]
    fn one_placeholder_per_image_expands() {
        assert_eq!(expand_image_tokens(&[1, 9, 2, 9], 9, &[2, 3]).unwrap(), [1, 9, 9, 2, 9, 9, 9]);
        assert!(expand_image_tokens(&[1, 9], 9, &[2, 3]).unwrap_err().contains("1 image placeholder(s) but 2"));
    }
}
