from .collect import (Collection, Row, collect, collect_rows, describe_pretraining,
                      load_published, markdown_table, plot, write_csv)

__all__ = ['Collection', 'Row', 'collect', 'collect_rows', 'describe_pretraining',
           'load_published', 'markdown_table', 'plot', 'write_csv']
