use std::time::Instant;
use tensorgrad::kernels::conv::direct_rows::DirectRowsForward;
use tensorgrad::kernels::conv::ConvForward;
use tensorgrad::kernels::Geometry;
fn main() {
    for (c, o, hw) in [(16usize, 16usize, 32usize), (32, 32, 16)] {
        let n = 128;
        let g = Geometry::new(c, (hw, hw), (3, 3), (1, 1), (1, 1), (1, 1)).unwrap();
        let big: Vec<f32> = (0..n * g.chw() + 64)
            .map(|i| (i % 7) as f32 * 0.1)
            .collect();
        let base = big.as_ptr() as usize % 64 / 4;
        let w: Vec<f32> = (0..o * g.k()).map(|i| (i % 5) as f32 * 0.1).collect();
        let k = DirectRowsForward::new(&g, o, &w);
        let mut ybig = vec![0.0f32; n * o * g.p() + 64];
        let ybase = ybig.as_ptr() as usize % 64 / 4;
        let mut ws = vec![0.0f32; k.workspace()];
        let mut best = [f64::MAX; 4];
        for _ in 0..15 {
            for (i, (xo, yo)) in [(0usize, 0usize), (4, 4), (1, 0), (0, 1)]
                .iter()
                .enumerate()
            {
                let xs = (16 - base + xo) % 16;
                let ys = (16 - ybase + yo) % 16;
                let x = &big[xs..xs + n * g.chw()];
                let y = &mut ybig[ys..ys + n * o * g.p()];
                let t = Instant::now();
                k.forward(x, None, y, &mut ws);
                best[i] = best[i].min(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        println!(
            "{c}->{o} {hw}: x,y aligned {:.2} ms; both +4 {:.2}; x+1 {:.2}; y+1 {:.2}",
            best[0], best[1], best[2], best[3]
        );
    }
}
