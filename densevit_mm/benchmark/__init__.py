from .collect import (Row, collect_rows, describe_pretraining, load_published, markdown_table,
                      plot, write_csv)

__all__ = ['Row', 'collect_rows', 'describe_pretraining', 'load_published', 'markdown_table',
           'plot', 'write_csv']
