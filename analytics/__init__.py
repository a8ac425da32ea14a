"""The pull-request report: reads the warehouse's metrics views (`queries`), computes the
period numbers (`periods`) and writes one self-contained HTML page (`html`); `build` ties them
together for the CLI (`cli`, `./dev report`), the Prefect flow, the demo and the benchmark."""
