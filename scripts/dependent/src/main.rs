//! What a user's program does with fdlend: lend a file, read it elsewhere, close.

use std::io::Write;
use std::path::Path;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: fdlend-dependent <dir on a real disk>");
    let path = Path::new(&dir).join("data.bin");
    let data: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
    std::fs::File::create(&path).unwrap().write_all(&data).unwrap();
    lend_to_a_thread(&path, &data);
    #[cfg(feature = "glommio")]
    glommio_side::lend_to_another_executor(&path, &data);
    println!("fdlend-dependent: ok");
}

fn lend_to_a_thread(path: &Path, data: &[u8]) {
    let lender = fdlend::Lender::new(std::fs::File::open(path).unwrap().into()).unwrap();
    let region = lender.region(100, 5000).unwrap();
    let reader = std::thread::spawn(move || region.read_to_vec().unwrap());
    assert_eq!(reader.join().unwrap(), data[100..5100]);
    lender.close_wait().unwrap();
}

#[cfg(feature = "glommio")]
mod glommio_side {
    use fdlend::glommio::{BlockingReader, LentDmaFile};
    use glommio::{io::DmaFile, LocalExecutor, LocalExecutorBuilder, Placement};
    use std::path::Path;

    fn executor() -> LocalExecutor {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(2 << 20)
            .make()
            .unwrap()
    }

    pub fn lend_to_another_executor(path: &Path, data: &[u8]) {
        let expected = data[4096..12288].to_vec();
        let path = path.to_path_buf();
        executor().run(async move {
            let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
            let region = file.region(4096, 8192).unwrap();
            let other = std::thread::spawn(move || {
                executor().run(async move { BlockingReader::new(region).read_region().await })
            });
            // Resolves once the other executor's loan is back; glommio closes the fd.
            file.close().await.unwrap();
            assert_eq!(other.join().unwrap().unwrap(), expected);
        });
    }
}
